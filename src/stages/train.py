"""Stage `train`: fit the colorizer on the shards, track the run in MLflow, write the best model.

    python -m src.stages.train            # uses params.yaml: train.*
    mlflow ui --backend-store-uri sqlite:///mlflow.db   # then compare runs at http://127.0.0.1:5000

Writes models/ (model.keras + model.json), reports/train.json (a DVC metric) and reports/train_history.csv
(per-epoch RMSE, a DVC plot). A killed run resumes from its last finished epoch, in the same MLflow run.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from src.core.entry import stage_main
from src.core.files import atomic_path, write_json
from src.core.params import TrainParams, as_flat_dict
from src.core.paths import (
    MODEL_DIR,
    ROOT,
    SHARD_DIR,
    TRAIN_CACHE,
    TRAIN_HISTORY,
    TRAIN_METRICS,
)
from src.data import colour
from src.data.shards import MANIFEST, ShardSet

log = logging.getLogger(__name__)


def resume_dir(p: TrainParams, shards: ShardSet, cache: Path) -> Path:
    """Resume state is keyed by params and data (and the weights it starts from), so a changed experiment never
    resumes a stale one."""
    key = json.dumps(as_flat_dict(p), sort_keys=True, default=str) + (shards.root / MANIFEST).read_text()
    from src.model import release

    key += "".join(release.verify(ROOT / path) for path in (p.init_from, p.hint_init_from) if path)
    return cache / hashlib.sha256(key.encode()).hexdigest()[:16]


def run(p: TrainParams, shards_dir: Path = SHARD_DIR, model_dir: Path = MODEL_DIR, metrics: Path = TRAIN_METRICS,
        history: Path = TRAIN_HISTORY, cache: Path = TRAIN_CACHE) -> dict:
    """Train and track one run; returns the metrics written to `metrics`."""
    import mlflow

    from src.data.pipeline import InputSpec
    from src.model.network import check_size
    from src.model.predict import Colorizer, save
    from src.training import fit, tracking
    from src.training.epoch_logger import EpochLogger

    shards = ShardSet.open(shards_dir)
    size = p.model.inference_size or shards.image_size  # what the saved model colours at
    check_size(p.model, size)
    uri = tracking.resolve_uri(p.tracking_uri)
    tracking.connect(uri, p.experiment)  # fail before any training
    fit.configure(p)
    workdir = resume_dir(p, shards, cache)
    run_id_file = workdir / "mlflow_run_id"
    resumed = run_id_file.read_text().strip() if run_id_file.exists() else None
    spec = InputSpec.of(p.model)
    samples = shards.load("val", limit=p.sample_count)

    @functools.cache  # one per model: its compiled graph reads the weights of each epoch
    def colorizer(model) -> Colorizer:
        return Colorizer(model, spec, size)

    def colorize(model, records):
        return colorizer(model).colorize_records(records)

    exp_name = os.environ.get("DVC_EXP_NAME", "")  # set by `dvc exp run`
    run_name = "-".join(filter(None, [p.model.arch, p.model.target, exp_name]))
    with mlflow.start_run(run_id=resumed, run_name=None if resumed else run_name) as active:
        workdir.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(active.info.run_id)
        if not resumed:
            tracking.log_run_context(as_flat_dict(p), shards)
            if exp_name:
                mlflow.set_tag("dvc_exp_name", exp_name)
        result = fit.fit(p, shards, workdir, callbacks=[EpochLogger(samples, colorize, p.sample_every)])
        summary = result.metrics()
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        meta = {"arch": p.model.arch, "encoder": p.model.encoder, "mlflow_run_id": active.info.run_id,
                "mlflow_tracking_uri": uri, "mlflow_experiment": p.experiment, "best_val_rmse": result.best_val_rmse}
        summary["model_uri"] = tracking.log_model(
            result.model, Colorizer(result.model, spec, size).inputs(colour.gray_input(samples, spec.gray)), meta)
        with atomic_path(model_dir) as tmp:
            tmp.mkdir()
            save(result.model, spec, size, tmp, meta)
        with atomic_path(history) as tmp:
            # timings stay in MLflow: the committed plot file changes only when results do
            result.history.drop(columns=["img_per_s"]).to_csv(tmp, index=False, float_format="%.6f")
    deterministic = {k: round(v, 6) if isinstance(v, float) else v for k, v in summary.items()
                     if k in ("best_val_rmse", "best_val_loss", "best_epoch", "epochs", "final_rmse", "params")}
    write_json(metrics, deterministic)  # timings stay in MLflow: a DVC metric should change only with results
    shutil.rmtree(workdir, ignore_errors=True)
    rate = np.format_float_positional(result.img_per_s, precision=3, fractional=False, trim="-")  # 0.0412, 11.7
    speed = (f"{rate} img/s after the compiling first step" if math.isfinite(result.img_per_s)
             else "no img/s: only the compiling first step ran")
    log.info("train: best epoch %d by %s (val RMSE %.4f, val loss %.4f); %s; run %s", result.best_epoch + 1, p.monitor,
             result.best_val_rmse, summary["best_val_loss"], speed, active.info.run_id)
    return summary


def main() -> None:
    stage_main(__doc__, "train", run)


if __name__ == "__main__":
    main()
