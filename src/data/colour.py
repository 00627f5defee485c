"""All colour maths in one place: OpenCV HSV ranges, gray inputs, chroma targets and their inverses.

Facts (../shared/docs/colour.md): OpenCV's uint8 hue is 0..179 (degrees / 2) and circular; a black-and-white
photo records luma (Rec.601 Y = 0.299 R + 0.587 G + 0.114 B), not HSV's V = max(R, G, B).

Stored records are uint8 arrays (..., 4) with channels H, S, V, Y. Models take the uint8 gray channel and learn
an encoding of the colour (H, S, V); encode_target works on numpy arrays and, with `xp=keras.ops`, inside the loss
on the accelerator, so the maths is written once and the input pipeline only moves uint8 bytes.
"""
from __future__ import annotations

import functools
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
CR_SCALE, CB_SCALE = 0.713, 0.564  # OpenCV YCrCb: Cr = (R - Y) * 0.713, Cb = (B - Y) * 0.564

Gray = Literal["luma", "v"]
Target = Literal["hs", "chroma", "cbcr", "bins", "cbcr_bins"]
# Class targets: the chroma plane each one's classes tile, and the grid step there (about 80 classes each).
BIN_SPACES: dict[str, Literal["chroma", "cbcr"]] = {"bins": "chroma", "cbcr_bins": "cbcr"}
BIN_STEPS = {"bins": 0.2, "cbcr_bins": 0.1}  # chroma spans [-1, 1]^2, (Cr, Cb) [-0.5, 0.5]^2
BIN_STEP = BIN_STEPS["bins"]


def is_bins(target: str) -> bool:
    """Does the model predict a distribution over chroma classes (bins, cbcr_bins) rather than one colour?"""
    return target in BIN_SPACES


def _space(target: str) -> str:
    """The encoding a target's vectors use: a bins target's is that of the plane its classes tile."""
    return BIN_SPACES.get(target, target)


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


def truth_channels(record):
    """The uint8 (H, S, V) channels of records, shape (..., 3): what the loss encodes on the fly."""
    return record[..., H : V + 1]


def _hsv_to_rgb(hue, sat, value, xp: ModuleType):
    """OpenCV H (0..179), S and V in 0..1 -> R, G, B in 0..1, written with xp ops so it runs inside the loss."""
    degrees = hue * (360.0 / HUE_RANGE)
    def channel(n: float):  # Wikipedia's HSV -> RGB "alternative" formula: no branches
        k = xp.mod(n + degrees / 60.0, 6.0)
        return value - value * sat * xp.clip(xp.minimum(k, 4.0 - k), 0.0, 1.0)
    return channel(5.0), channel(3.0), channel(1.0)


def encode_target(hue, sat, target: Target = "chroma", xp: ModuleType = np, value=None):
    """Float OpenCV H (0..179), S and V (0..255) -> the two channels the model predicts, shape (..., 2).

    hs: (H / 180, S / 255), the original design with the true hue range; hue is still linear there.
    chroma: S/255 * (cos, sin)(2 pi H / 180) in [-1, 1]: circular, and hue carries no weight where S ~ 0.
    bins: the chroma vector too; the model predicts a distribution over chroma_bins() (see bin_labels).
    cbcr: YCrCb's (Cr, Cb) / 255 in about [-0.5, 0.5] (needs V): linear in RGB, so its squared error tracks the
    RGB error that PSNR measures, where HSV's S counts a dark pixel's faint colour as much as a bright one's.
    cbcr_bins: (Cr, Cb) too, predicted as a distribution over chroma_bins("cbcr_bins").
    """
    sat = sat / SAT_MAX
    target = _space(target)
    if target == "hs":
        return xp.stack([hue / HUE_RANGE, sat], axis=-1)
    if target == "cbcr":
        if value is None:
            raise ValueError("the cbcr target needs the V channel")
        r, g, b = _hsv_to_rgb(hue, sat, value / VALUE_MAX, xp)
        y = r * LUMA_BGR[2] + g * LUMA_BGR[1] + b * LUMA_BGR[0]
        return xp.stack([(r - y) * CR_SCALE, (b - y) * CB_SCALE], axis=-1)
    angle = hue * (2.0 * np.pi / HUE_RANGE)
    return xp.stack([sat * xp.cos(angle), sat * xp.sin(angle)], axis=-1)


@functools.cache
def chroma_bins(target: str = "bins") -> np.ndarray:
    """Centres (k, 2) of a grid over a bins target's chroma plane, those a real colour reaches; read-only.

    bins: the cells of the HSV chroma disk (S <= 1). cbcr_bins: the cells of the (Cr, Cb) plane that some RGB colour
    falls in (the plane's reachable hexagon), found from a dense sample of the RGB cube.
    """
    step = BIN_STEPS[target]
    if BIN_SPACES[target] == "chroma":
        axis = np.arange(-1.0 + step / 2, 1.0, step)
        grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
        centres = grid[np.hypot(grid[:, 0], grid[:, 1]) < 1.0 + step / 2]
    else:
        levels = np.linspace(0.0, 1.0, 33, dtype=np.float32)
        r, g, b = (a.ravel() for a in np.meshgrid(levels, levels, levels, indexing="ij"))
        y = r * LUMA_BGR[2] + g * LUMA_BGR[1] + b * LUMA_BGR[0]
        cells = np.floor((np.stack([(r - y) * CR_SCALE, (b - y) * CB_SCALE], axis=-1) + 0.5) / step)
        cells = np.unique(np.clip(cells, 0, round(1.0 / step) - 1), axis=0)
        centres = (cells + 0.5) * step - 0.5
    centres = centres.astype(np.float32)
    centres.flags.writeable = False
    return centres


def bin_labels(chroma, xp: ModuleType = np, target: str = "bins"):
    """Soft class labels (..., k) for chroma vectors (..., 2): a Gaussian over the bin centres, as Zhang et al.
    (2016) soft-encode ab values, so neighbouring bins share the credit instead of one arbitrary winner."""
    centres = chroma_bins(target)
    # two (..., k) planes, not one (..., k, 2) array: the same sums, 5x faster on the CPU
    d2 = xp.square(chroma[..., :1] - centres[:, 0]) + xp.square(chroma[..., 1:] - centres[:, 1])
    logits = -d2 / (2.0 * (BIN_STEPS[target] / 2) ** 2)
    logits = logits - xp.max(logits, axis=-1, keepdims=True)
    weights = xp.exp(logits)
    return weights / xp.sum(weights, axis=-1, keepdims=True)


def annealed_mean(logits, temperature: float = 1.0, boost: float = 0.0, xp: ModuleType = np, target: str = "bins"):
    """Class scores (..., k) -> chroma (..., 2): the mean of softmax(logits / T) over the bin centres.

    T = 1 is the distribution's mean (what a regression would predict); lower T moves towards its mode, more
    colourful where the model is sure (Zhang et al. 2016 use T = 0.38). boost > 0 weighs each class by
    1 + boost * its colour strength (0..1): most pixels are near gray, so the plain mode is gray too; this
    rebalances towards colourful classes at inference, as Zhang et al.'s class rebalancing does in training.
    """
    centres = chroma_bins(target)
    z = logits / temperature  # a new array: callers re-decode the same scores with other settings
    if boost:
        strength = colour_strength(centres, np.hypot(*centres.T) * SAT_MAX, target)
        z += np.log1p(boost * strength).astype(np.float32)
    # in place where numpy allows: a batch's (..., k) arrays are tens of MB, and each new one costs page faults
    z -= xp.max(z, axis=-1, keepdims=True)
    p = np.exp(z, out=z) if xp is np else xp.exp(z)
    return xp.matmul(p, centres) / xp.sum(p, axis=-1, keepdims=True)  # normalise the 2 means, not the k weights


def colour_strength(encoded, sat, target: Target, xp: ModuleType = np):
    """How colourful the truth is, 0..1: S / 255, or for cbcr the (Cr, Cb) length (a pure red or blue is ~0.5)."""
    if _space(target) == "cbcr":
        return xp.minimum(2.0 * xp.sqrt(xp.sum(xp.square(encoded), axis=-1)), 1.0)
    return sat / SAT_MAX


def decode_target(encoded: np.ndarray, target: Target = "chroma") -> tuple[np.ndarray, np.ndarray]:
    """Inverse of encode_target for hs and chroma: (..., 2) floats -> OpenCV H (0..179) and S (0..255), float32."""
    a, b = encoded[..., 0].astype(np.float32), encoded[..., 1].astype(np.float32)
    target = _space(target)
    if target == "cbcr":
        raise ValueError("cbcr has no H, S decoding: render it with render_prediction")
    if target == "hs":
        hue = np.mod(a * HUE_RANGE, HUE_RANGE)  # wrap like OpenCV would, instead of clipping
        sat = np.clip(b, 0.0, 1.0) * SAT_MAX
    else:
        hue = np.mod(np.arctan2(b, a) * (HUE_RANGE / (2.0 * np.pi)), HUE_RANGE)
        sat = np.clip(np.hypot(a, b), 0.0, 1.0) * SAT_MAX
    return hue, sat


def record_target(record: np.ndarray, target: Target = "chroma") -> np.ndarray:
    """Encoded target (..., 2) float32 from uint8 records (..., 4), (H, S, V) or, but for cbcr, (H, S) pairs."""
    hsv = record[..., H : V + 1].astype(np.float32)
    return encode_target(hsv[..., H], hsv[..., S], target, value=hsv[..., V] if hsv.shape[-1] > V else None)


def render(luma: np.ndarray, hue: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """Colour image (uint8 BGR) with the given H, S that keeps the photo's own luma.

    In HSV, RGB = V * f(H, S), so V = Y / luma(f(H, S)) reproduces luma Y (colour.md). Where that V would pass
    255 (a saturated colour cannot be that bright), the colour is mixed with white instead: same hue, less
    saturation, and still the photo's luma.
    """
    unit = np.stack(
        [np.round(hue).astype(np.float32) % HUE_RANGE, sat.astype(np.float32), np.full_like(sat, VALUE_MAX, np.float32)],
        axis=-1,
    )
    # float HSV in OpenCV: H in degrees 0..360, S and V in 0..1
    unit[..., 0] *= 360.0 / HUE_RANGE
    unit[..., 1:] /= SAT_MAX
    f = cv2.cvtColor(unit, cv2.COLOR_HSV2BGR)  # V = 1
    y = luma.astype(np.float32)
    f_luma = f @ LUMA_BGR
    value = y / np.maximum(f_luma, 1e-6)
    white = np.clip((1.0 - y / VALUE_MAX) / np.maximum(1.0 - f_luma, 1e-6), 0.0, 1.0)[..., None]  # share of f
    bgr = np.where((value > VALUE_MAX)[..., None], (f * white + (1.0 - white)) * VALUE_MAX,
                   f * np.clip(value, 0.0, VALUE_MAX)[..., None])
    return np.clip(np.round(bgr), 0, 255).astype(np.uint8)


def render_prediction(luma: np.ndarray, encoded: np.ndarray, target: Target = "chroma") -> np.ndarray:
    """Model output (h, w, 2) + luma (h, w) uint8 -> uint8 BGR image (bins targets: their annealed mean)."""
    target = _space(target)
    if target == "cbcr":  # float YCrCb in OpenCV: Y in 0..1, chroma offset by 0.5
        ycrcb = np.dstack([luma.astype(np.float32) / VALUE_MAX, encoded.astype(np.float32) + 0.5])
        bgr = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
        return np.clip(np.round(bgr * VALUE_MAX), 0, 255).astype(np.uint8)
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
