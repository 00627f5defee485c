"""Model registry: register each evaluated model; the `champion` alias moves only to a better one."""
from __future__ import annotations

import logging

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src import metrics

log = logging.getLogger(__name__)
CHAMPION = "champion"


def pyfunc_rmse(model_uri: str, gray: np.ndarray, truth_rgb: np.ndarray) -> float:
    """Mean per-image RGB RMSE of a registered pyfunc on gray images, the same path serving uses."""
    predicted = mlflow.pyfunc.load_model(model_uri).predict(gray)
    return float(np.mean([metrics.rmse(p, t) for p, t in zip(predicted, truth_rgb)]))


def promote_if_better(name: str, version: str, gray: np.ndarray, truth_rgb: np.ndarray) -> dict:
    """Score the new version and the current champion on the same images; move the alias if the new one wins."""
    client = MlflowClient()
    new = pyfunc_rmse(f"models:/{name}/{version}", gray, truth_rgb)
    client.set_model_version_tag(name, version, "eval_rmse", f"{new:.4f}")
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    old = pyfunc_rmse(f"models:/{name}@{CHAMPION}", gray, truth_rgb) if champion else None
    promoted = old is None or new < old
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    log.info("registry: %s v%s eval RMSE %.3f vs champion %s -> %s", name, version, new,
             f"v{champion.version} {old:.3f}" if champion else "none", "promoted" if promoted else "kept")
    return {"version": version, "eval_rmse": new, "champion_version": champion.version if champion else None,
            "champion_rmse": old, "promoted": promoted}
