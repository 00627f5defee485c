"""All colour maths in one place: OpenCV HSV ranges, gray inputs, chroma targets and their inverses.

Facts (../shared/docs/colour.md): OpenCV's uint8 hue is 0..179 (degrees / 2) and circular; a black-and-white
photo records luma (Rec.601 Y = 0.299 R + 0.587 G + 0.114 B), not HSV's V = max(R, G, B).

Stored records are uint8 arrays (..., 4) with channels H, S, V, Y. Models take the uint8 gray channel and learn
an encoding of (H, S); encode_target works on numpy arrays and, with `xp=keras.ops`, inside the loss on the
accelerator, so the maths is written once and the input pipeline only moves uint8 bytes.
"""
from __future__ import annotations

from types import ModuleType
from typing import Literal

import cv2
import numpy as np

HUE_RANGE = 180  # OpenCV uint8 hue: 0..179, two degrees a step
SAT_MAX = 255.0
VALUE_MAX = 255.0
CHANNELS = ("H", "S", "V", "Y")
H, S, V, Y = range(4)
LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # Rec.601, in OpenCV's BGR order

Gray = Literal["luma", "v"]
Target = Literal["hs", "chroma"]


def _pixelwise(image: np.ndarray, code: int) -> np.ndarray:
    """cv2.cvtColor over any leading dimensions (a batch is converted as one tall image)."""
    flat = np.ascontiguousarray(image).reshape(-1, image.shape[-2], image.shape[-1])
    out = cv2.cvtColor(flat, code)
    return out.reshape(*image.shape[:-1], -1)


def bgr_to_record(bgr: np.ndarray) -> np.ndarray:
    """uint8 BGR (..., h, w, 3) -> uint8 records (..., h, w, 4): H (0..179), S, V, Y (Rec.601 luma)."""
    return np.concatenate([_pixelwise(bgr, cv2.COLOR_BGR2HSV), _pixelwise(bgr, cv2.COLOR_BGR2GRAY)], axis=-1)


def record_to_bgr(record: np.ndarray) -> np.ndarray:
    """Inverse of bgr_to_record (the Y channel is redundant and ignored)."""
    return _pixelwise(record[..., :3], cv2.COLOR_HSV2BGR)


def gray_input(record, gray: Gray = "luma"):
    """Model input from records (..., 4): the uint8 gray channel, shape (..., 1). Works on arrays and tensors."""
    channel = Y if gray == "luma" else V
    return record[..., channel : channel + 1]


def hs_channels(record):
    """The uint8 (H, S) channels of records, shape (..., 2): what the loss encodes on the fly."""
    return record[..., H : S + 1]


def encode_target(hue, sat, target: Target = "chroma", xp: ModuleType = np):
    """Float OpenCV H (0..179) and S (0..255) -> the two channels the model predicts, shape (..., 2).

    hs: (H / 180, S / 255), the original design with the true hue range; hue is still linear there.
    chroma: S/255 * (cos, sin)(2 pi H / 180) in [-1, 1]: circular, and hue carries no weight where S ~ 0.
    """
    sat = sat / SAT_MAX
    if target == "hs":
        return xp.stack([hue / HUE_RANGE, sat], axis=-1)
    angle = hue * (2.0 * np.pi / HUE_RANGE)
    return xp.stack([sat * xp.cos(angle), sat * xp.sin(angle)], axis=-1)


def decode_target(encoded: np.ndarray, target: Target = "chroma") -> tuple[np.ndarray, np.ndarray]:
    """Inverse of encode_target: (..., 2) floats -> OpenCV H (0..179) and S (0..255), float32."""
    a, b = encoded[..., 0].astype(np.float32), encoded[..., 1].astype(np.float32)
    if target == "hs":
        hue = np.mod(a * HUE_RANGE, HUE_RANGE)  # wrap like OpenCV would, instead of clipping
        sat = np.clip(b, 0.0, 1.0) * SAT_MAX
    else:
        hue = np.mod(np.arctan2(b, a) * (HUE_RANGE / (2.0 * np.pi)), HUE_RANGE)
        sat = np.clip(np.hypot(a, b), 0.0, 1.0) * SAT_MAX
    return hue, sat


def record_target(record: np.ndarray, target: Target = "chroma") -> np.ndarray:
    """Encoded target (..., 2) float32 from uint8 records (..., 4) or (H, S) pairs (..., 2)."""
    hs = record[..., H : S + 1].astype(np.float32)
    return encode_target(hs[..., 0], hs[..., 1], target)


def render(luma: np.ndarray, hue: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """Colour image (uint8 BGR) with the given H, S that keeps the photo's own luma.

    In HSV, RGB = V * f(H, S), so V = Y / luma(f(H, S)) reproduces luma Y (colour.md); clipped to 255 where the
    chroma cannot be that bright.
    """
    unit = np.stack(
        [np.round(hue).astype(np.float32) % HUE_RANGE, sat.astype(np.float32), np.full_like(sat, VALUE_MAX, np.float32)],
        axis=-1,
    )
    # float HSV in OpenCV: H in degrees 0..360, S and V in 0..1
    unit[..., 0] *= 360.0 / HUE_RANGE
    unit[..., 1:] /= SAT_MAX
    f = cv2.cvtColor(unit, cv2.COLOR_HSV2BGR)  # V = 1
    value = luma.astype(np.float32) / np.maximum(f @ LUMA_BGR, 1e-6)
    bgr = f * np.clip(value, 0.0, VALUE_MAX)[..., None]
    return np.clip(np.round(bgr), 0, 255).astype(np.uint8)


def render_prediction(luma: np.ndarray, encoded: np.ndarray, target: Target = "chroma") -> np.ndarray:
    """Model output (h, w, 2) + luma (h, w) uint8 -> uint8 BGR image."""
    hue, sat = decode_target(encoded, target)
    return render(luma, hue, sat)


def luma(bgr: np.ndarray) -> np.ndarray:
    """Rec.601 luma of uint8 BGR images (..., h, w, 3) -> (..., h, w) uint8: what a B&W photo records."""
    return _pixelwise(bgr, cv2.COLOR_BGR2GRAY)[..., 0]


def mean_chroma(records: np.ndarray) -> float:
    """Mean chroma max(R,G,B) - min(R,G,B) over pixels (0..255) from records: S * V / 255. Zero for gray."""
    return float(np.mean(records[..., S].astype(np.float32) * records[..., V]) / SAT_MAX)


def model_gray(bgr: np.ndarray, gray: Gray) -> np.ndarray:
    """What a model trained on `gray` sees from a colour image (h, w, 3); a gray image (h, w) is used as is."""
    if bgr.ndim == 2:
        return bgr
    return luma(bgr) if gray == "luma" else bgr.max(axis=-1)
