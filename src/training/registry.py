"""Model registry: register each evaluated model; the `champion` alias moves only to a model that beats the
champion AND doing nothing (the gray and constant-colour baselines on the same images)."""
from __future__ import annotations

import logging

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src.data import metrics

log = logging.getLogger(__name__)
CHAMPION = "champion"
REASON_TAG = "not_promoted"
TEST_PSNR_TAG, RELEASE_PSNR_TAG = "test_psnr", "release_test_psnr"


def pyfunc_scores(model_uri: str, gray: np.ndarray, truth_rgb: np.ndarray, batch: int = 32) -> tuple[float, float]:
    """(mean RGB RMSE, mean PSNR) per image of a registered pyfunc on gray images, the path serving uses; `batch`
    images per request, so memory does not grow with the number of images."""
    model = mlflow.pyfunc.load_model(model_uri)
    scores = [(metrics.rmse(p, t), metrics.psnr(p, t)) for i in range(0, len(gray), batch)
              for p, t in zip(model.predict(gray[i : i + batch]), truth_rgb[i : i + batch])]
    rmse, psnr = np.mean(scores, axis=0)
    return float(rmse), float(psnr)


def tag_against_release(name: str, version: str, psnr: float, release_psnr: float) -> None:
    """Record the version's PSNR beside the released model's on the same test images."""
    client = MlflowClient()
    client.set_model_version_tag(name, version, TEST_PSNR_TAG, f"{psnr:.4f}")
    client.set_model_version_tag(name, version, RELEASE_PSNR_TAG, f"{release_psnr:.4f}")


def beats_release(version) -> tuple[bool, str]:
    """Whether a registered version beat the released model on its own test split, and the figures that say so."""
    tags = version.tags or {}
    if TEST_PSNR_TAG not in tags or RELEASE_PSNR_TAG not in tags:
        return False, "not scored beside the release"
    psnr, release_psnr = float(tags[TEST_PSNR_TAG]), float(tags[RELEASE_PSNR_TAG])
    return psnr > release_psnr, f"{psnr:.2f} vs {release_psnr:.2f} dB on its test split"


def promote_if_better(name: str, version: str, gray: np.ndarray, truth_rgb: np.ndarray,
                      baselines: dict[str, float], margin_db: float) -> dict:
    """Score the new version and, when it beats every baseline's PSNR (`baselines`: name -> PSNR on these images) by
    `margin_db`, the current champion on the same images; move the alias when it also beats the champion's RMSE.
    Otherwise the version keeps a `not_promoted` tag saying why."""
    client = MlflowClient()
    new_rmse, new_psnr = pyfunc_scores(f"models:/{name}/{version}", gray, truth_rgb)
    client.set_model_version_tag(name, version, "eval_rmse", f"{new_rmse:.4f}")
    client.set_model_version_tag(name, version, "eval_psnr", f"{new_psnr:.4f}")
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    losses = [f"{base} {psnr:.2f} dB" for base, psnr in baselines.items() if not new_psnr >= psnr + margin_db]
    old = None
    if champion and not losses:  # a version that loses to doing nothing is kept out whatever the champion scores
        try:
            old = pyfunc_scores(f"models:/{name}@{CHAMPION}", gray, truth_rgb)[0]
        except Exception as exc:  # whatever the flavour raises for a model whose layers the code no longer has
            log.warning("registry: champion v%s no longer loads (%s): the new version is judged on the baselines "
                        "alone", champion.version, str(exc).splitlines()[0][:200])
    if losses:
        reason = f"PSNR {new_psnr:.2f} dB does not beat {' and '.join(losses)} by {margin_db} dB"
    elif old is not None and not new_rmse < old:
        reason = f"RMSE {new_rmse:.3f} does not beat champion v{champion.version}'s {old:.3f}"
    else:
        reason = ""
    if reason:
        client.set_model_version_tag(name, version, REASON_TAG, reason)
    else:
        client.set_registered_model_alias(name, CHAMPION, version)
    log.info("registry: %s v%s %s", name, version, f"kept out of {CHAMPION}: {reason}" if reason else
             f"is the new {CHAMPION} (PSNR {new_psnr:.2f} dB, RMSE {new_rmse:.3f}"
             + (f" vs v{champion.version}'s {old:.3f})" if old is not None else ")"))
    return {"version": version, "eval_rmse": new_rmse, "eval_psnr": new_psnr,
            "champion_version": champion.version if champion else None, "champion_rmse": old,
            "promoted": not reason, "reason": reason}
