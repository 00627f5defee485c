"""Image-quality metrics of colorization (../shared/docs/colour.md): all take uint8 BGR images of one size."""
from __future__ import annotations

import cv2
import numpy as np

from src.data.colour import HUE_RANGE

PEAK = 255.0


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """RGB RMSE on 0..255 over all pixels and channels: the headline eval_rmse."""
    return float(np.sqrt(np.mean((pred.astype(np.float64) - truth) ** 2)))


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """PSNR = 20 log10(255 / RMSE); capped at 100 dB for identical images."""
    e = rmse(pred, truth)
    return 100.0 if e == 0 else float(20 * np.log10(PEAK / e))


def hs_rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """The original design's figure: RMSE over OpenCV H and S together, hue difference taken linearly."""
    p = cv2.cvtColor(pred, cv2.COLOR_BGR2HSV)[..., :2].astype(np.float64)
    t = cv2.cvtColor(truth, cv2.COLOR_BGR2HSV)[..., :2].astype(np.float64)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def hue_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Circular hue error in degrees, weighted by the truth's saturation (hue means nothing where S ~ 0)."""
    p = cv2.cvtColor(pred, cv2.COLOR_BGR2HSV).astype(np.float64)
    t = cv2.cvtColor(truth, cv2.COLOR_BGR2HSV).astype(np.float64)
    d = np.abs(p[..., 0] - t[..., 0])
    d = np.minimum(d, HUE_RANGE - d) * (360.0 / HUE_RANGE)
    weight = t[..., 1]
    return float((d * weight).sum() / weight.sum()) if weight.sum() else 0.0


def colourfulness(bgr: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003): std and mean of the rg and yb opponent channels."""
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def image_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"rmse": rmse(pred, truth), "psnr": psnr(pred, truth), "hs_rmse": hs_rmse(pred, truth),
            "hue_error": hue_error(pred, truth), "colourfulness": colourfulness(pred)}
