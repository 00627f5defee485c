"""MLflow at the edge: tracking URI, run context (params, git commit, data version), epoch logging, model logging."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.utils.file_utils import local_file_uri_to_path

from src.core.paths import ROOT, tracking_uri
from src.data.shards import MANIFEST, ShardSet
from src.training.provenance import dvc_hash, git_commit

if TYPE_CHECKING:  # Keras loads only where a model is logged: choosing a model to serve needs none
    import keras

log = logging.getLogger(__name__)


class TrackingUnavailable(RuntimeError):
    pass


def resolve_uri(configured: str = "") -> str:
    """Param, else $MLFLOW_TRACKING_URI, else an absolute sqlite URI at the repository root."""
    return tracking_uri(configured)


def connect(uri: str, experiment: str) -> str:
    """Point MLflow at `uri` (failing fast if a server does not answer) and select the experiment."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is unreachable ({exc}); start it (docs/scaling.md) or set "
                "train.tracking_uri / MLFLOW_TRACKING_URI to a reachable server"
            ) from exc
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        try:
            mlflow.create_experiment(experiment, artifact_location=artifact_location(uri))
        except mlflow.exceptions.MlflowException:  # a concurrent worker created it a moment ago
            pass
    chosen = mlflow.set_experiment(experiment)
    warn_if_moved(uri, chosen)
    return chosen.experiment_id


def warn_if_moved(uri: str, experiment) -> None:
    """MLflow keeps an experiment's artifact location absolute: in a copied or moved project, the runs would write
    their artifacts into the old folder (or fail where it is gone) while the store beside them holds the rest."""
    home = store_folder(uri)
    if home is None:  # a server keeps its own artifact store
        return
    where = Path(local_file_uri_to_path(experiment.artifact_location))
    if where.is_absolute() and not where.is_relative_to(home):
        log.warning("experiment %r keeps its artifacts in %s, outside %s: this MLflow store was copied or moved "
                    "there, and its runs' images and models would land in the old folder; start a fresh store "
                    "(move mlflow.db and mlruns/ aside) or set train.tracking_uri", experiment.name, where, home)


def store_folder(uri: str) -> Path | None:
    """The folder holding a sqlite store's database; None for a server."""
    return Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Beside the database for a sqlite store (MLflow's default, ./mlruns, follows whatever directory runs it);
    the server's own default otherwise."""
    home = store_folder(uri)
    return (home / "mlruns").as_uri() if home else None


def log_run_context(params: dict, shards: ShardSet) -> None:
    """Every param, the git commit and the data version (mlflow.log_input of the shard set)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    mlflow.log_params({**params, "data.image_size": shards.image_size,
                       "data.train_photos": shards.manifest["splits"]["train"]["photos"]})
    mlflow.set_tag("git_commit", git_commit())
    manifest_digest = hashlib.sha256((shards.root / MANIFEST).read_bytes()).hexdigest()
    dvc_md5 = dvc_hash(os.path.relpath(shards.root, ROOT))
    mlflow.set_tags({"data.manifest_sha256": manifest_digest, "data.dvc_md5": dvc_md5 or "not in dvc.lock yet"})
    counts = {s: m["records"] for s, m in shards.manifest["splits"].items()}
    dataset = MetaDataset(LocalArtifactDatasetSource(str(shards.root)), name="shards", digest=(dvc_md5 or manifest_digest)[:32])
    mlflow.log_input(dataset, context="training", tags={f"records.{k}": str(v) for k, v in counts.items()})


def log_model(model: keras.Model, example: np.ndarray, meta: dict) -> str:
    """The Keras model (keras flavour) with a signature of a real input batch and the outputs the graph gives it;
    returns its URI."""
    import keras
    from mlflow.models import infer_signature

    # the outputs' shape and dtype from the graph, not from a prediction (which traces the model again)
    output = model.compute_output_spec(keras.tree.map_structure(lambda a: keras.KerasTensor(a.shape, a.dtype), example))
    signature = infer_signature(example, np.zeros(output.shape, output.dtype))
    info = mlflow.keras.log_model(model, name="model", signature=signature, metadata=meta,
                                  pip_requirements=requirements())
    return info.model_uri


def requirements(*also: str) -> list[str]:
    """Pinned runtime requirements of a logged model, and of the packages `also` names (MLflow's own inference of
    them needs a network round trip)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("keras", "tensorflow", "numpy", "opencv-python-headless", *also)]


def log_json(data: dict, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(data, indent=2, sort_keys=True), artifact_file)
