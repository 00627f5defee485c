"""Which colorizer `python -m src.colorize` and `python -m src.app` use, and why: one line for the user.

--model names one (`release`, a release .npz, a model folder, or an MLflow URI); otherwise the registry's
champion when it beat the released model on the same test images, else the released model (release/). A release
runs on onnxruntime where it is installed (its ONNX files: src/model/onnx_runtime.py), without loading TensorFlow;
`--runtime keras` runs it as Keras. A registered model that carries the ONNX flavour (src/serving/pyfunc.py) runs it
on onnxruntime too, unless Keras is asked for; a model folder runs as Keras.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from src.core.paths import store_absent, tracking_uri
from src.model import release
from src.model.predict import META_FILE, Colorizer

log = logging.getLogger(__name__)
REGISTERED = "models:/colorizer@champion"
RELEASE = "release"
RUNTIMES = ("onnx", "keras")


def default_runtime() -> str:
    from src.model import onnx_runtime

    return "onnx" if onnx_runtime.available() else "keras"


@dataclass(frozen=True)
class Chosen:
    colorizer: Colorizer
    name: str  # what the metadata of every output names: the release, an MLflow URI or a folder
    version: str  # the release's SHA-256, a registry version or an MLflow run id
    why: str
    run_id: str = ""
    runtime: str = "keras"

    def line(self) -> str:
        version = f" {self.version[:12]}" if self.version else ""
        engine = "onnxruntime" if self.runtime == "onnx" else "Keras (TensorFlow)"
        return f"model: {self.name}{version} on {engine} ({self.why})"


def is_uri(spec: str) -> bool:
    return "://" in spec or spec.startswith(("models:/", "runs:/"))


def choose(spec: str | None, runtime: str | None = None) -> Chosen:
    """Load the model `spec` names, or the default; release.ReleaseError, FileNotFoundError or OSError say why not.
    `runtime` (onnx | keras; default onnx where onnxruntime is installed) is how a release runs."""
    asked, runtime = runtime, runtime or default_runtime()
    if spec is None:
        try:
            return _default(runtime)
        except release.ReleaseError as exc:  # its ONNX files could not be built as recorded: Keras still colours
            if asked or runtime != "onnx":
                raise
            log.warning("%s; colouring on Keras instead", exc)
            return _default("keras")
    if spec == RELEASE or spec.endswith(".npz"):
        path = release.WEIGHTS if spec == RELEASE else Path(spec)
        return _release(path, "named by --model", runtime)
    if is_uri(spec):
        return _registered(spec, "named by --model", runtime)
    from src.model.predict import load

    colorizer = load(spec)  # its own clear error when the folder holds no model
    run_id = json.loads((Path(spec) / META_FILE).read_text()).get("mlflow_run_id", "")
    # the folder's name, not its path: outputs and the page do not show where files live on this machine
    return Chosen(colorizer, Path(spec).resolve().name, run_id, "named by --model", run_id)


def _release(path: Path, why: str, runtime: str) -> Chosen:
    if runtime == "onnx":
        from src.model import onnx_runtime

        colorizer = onnx_runtime.load(path)
    else:
        colorizer = release.load(path)
    # loading checked the file against its SHA-256: that is its version
    return Chosen(colorizer, path.stem, release.expected_sha256(path), why, runtime=runtime)


def _default(runtime: str) -> Chosen:
    champion = _champion()
    if champion is not None:
        from src.training import registry

        wins, figures = registry.beats_release(champion)
        if wins:
            return _registered(REGISTERED, f"the registry's champion v{champion.version} beats the release: {figures}",
                               runtime, champion)
        why = f"the registry's champion v{champion.version} does not beat it: {figures}"
    else:
        why = "no registry champion"
    return _release(release.WEIGHTS, f"the released model; {why}", runtime)


def _registered(uri: str, why: str, runtime: str, version=None) -> Chosen:
    import mlflow
    from mlflow.exceptions import MlflowException

    from src.training import tracking

    mlflow.set_tracking_uri(tracking.resolve_uri())
    try:
        # only a Keras run is asked for: versions logged before the ONNX flavour take no config (and would warn)
        config = {"runtime": "keras"} if runtime == "keras" else None
        model = mlflow.pyfunc.load_model(uri, model_config=config).unwrap_python_model()
    except MlflowException as exc:  # as a ValueError: callers need not import MLflow to report it
        raise ValueError(exc.message) from exc
    return Chosen(model.colorizer, uri, f"v{version.version}" if version else "", why,
                  version.run_id if version else "", getattr(model, "runtime", "keras"))


def _champion():
    """The registry's champion version, or None (no store, no registered model, no alias). MLflow (about 1 s and
    100 MB) is imported only when there is a store to look in."""
    uri = tracking_uri()
    if store_absent(uri):
        return None
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    try:
        return MlflowClient(uri).get_model_version_by_alias("colorizer", "champion")
    except Exception:  # noqa: BLE001 - no registry, no model, no alias: all mean "none"
        return None
