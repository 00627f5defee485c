"""User-guided colorization (Zhang et al. 2017): colour hints, their map for the model, and how training draws them.

A hint is a point of the photo and a colour. The model sees hints as three channels at its own resolution: the
hint colour's chroma (the target's encoding, src/data/colour.py) over a small patch around each point, and a mask of
where hints are. Training draws them from the truth (`simulated`, in the tf.data pipeline); users give them as
JSON (`parse`): [{"x": 120, "y": 80, "colour": "#c03020"}, ...], x and y in pixels of the photo.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from src.data import colour

CHANNELS = 3  # chroma (2) and mask
HALF = 2  # a user's hint covers a (2 * HALF + 1)^2 patch at the model's resolution
MAX_POINTS = 32  # training: at most this many simulated hints per photo
MEAN_POINTS = 8.0  # training: mean simulated hints on a photo that has some (Zhang et al.; train.hint_points)
MAX_HALF = 4  # training: patch sides 1, 3, 5, 7, 9 px, uniformly
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class Hint:
    x: float  # pixels of the photo, from its left edge
    y: float  # ... and its top
    chroma: tuple[float, float]  # the colour in the target's encoding (colour.encode_target)
    rgb: str = ""  # the colour as the user gave it, "#rrggbb" (kept in the output's metadata)


def described(given: list[Hint]) -> list[dict]:
    """Hints as users write them: what an output's metadata records."""
    return [{"x": h.x, "y": h.y, "colour": h.rgb} for h in given]


def chroma_of(bgr: tuple[int, int, int], target: str) -> tuple[float, float]:
    """The target-space chroma of one BGR colour."""
    record = colour.bgr_to_record(np.array([[bgr]], np.uint8))
    a, b = colour.record_target(record, target)[0, 0]
    return float(a), float(b)


def hex_rgb(rgb_hex: str) -> tuple[int, int, int]:
    """'#c03020' (or 'c03020') -> (192, 48, 32); ValueError otherwise."""
    match = _HEX.match(rgb_hex.strip()) if isinstance(rgb_hex, str) else None
    if not match:
        raise ValueError(f"colour must be RGB hex like '#c03020', got {rgb_hex!r}")
    r, g, b = bytes.fromhex(match.group(1))
    return r, g, b


def colour_of(rgb_hex: str, target: str) -> tuple[float, float]:
    r, g, b = hex_rgb(rgb_hex)
    return chroma_of((b, g, r), target)


def parse(raw: str | list, width: int, height: int, target: str) -> list[Hint]:
    """JSON text or a decoded list of {"x", "y", "colour" (or "color")} -> hints; ValueError naming the bad one."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"hints are not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError('hints must be a JSON list of {"x": .., "y": .., "colour": "#rrggbb"}')
    hints = []
    for i, item in enumerate(raw):
        where = f"hint {i + 1}"
        if not isinstance(item, dict) or not {"x", "y"} <= set(item) or not ({"colour", "color"} & set(item)):
            raise ValueError(f'{where}: expected {{"x": .., "y": .., "colour": "#rrggbb"}}, got {item!r}')
        x, y = item["x"], item["y"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (x, y)):
            raise ValueError(f"{where}: x and y must be numbers, got {x!r}, {y!r}")
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"{where}: ({x}, {y}) is outside the {width}x{height} photo")
        rgb = item.get("colour", item.get("color"))
        try:
            chroma = colour_of(rgb, target)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        hints.append(Hint(float(x), float(y), chroma, "#" + rgb.strip().lstrip("#").lower()))
    return hints


def any_given(maps: np.ndarray | None) -> bool:
    """Do hint maps (hint_map's, any leading shape) hold a hint anywhere? Their third channel is the mask."""
    return maps is not None and bool(np.any(maps[..., 2]))


def hint_map(hints: list[Hint], photo_hw: tuple[int, int], size: int, half: int = HALF) -> np.ndarray:
    """Hints in photo pixels -> float32 (size, size, 3) at the model's resolution: chroma and mask; where patches
    overlap, their mean colour."""
    out = np.zeros((size, size, CHANNELS), np.float32)
    h, w = photo_hw
    for hint in hints:
        cx, cy = int(hint.x * size / w), int(hint.y * size / h)
        rows, cols = slice(max(cy - half, 0), cy + half + 1), slice(max(cx - half, 0), cx + half + 1)
        out[rows, cols, :2] += hint.chroma
        out[rows, cols, 2] += 1.0
    covered = out[..., 2] > 0
    out[covered, :2] /= out[covered, 2:]
    out[..., 2] = covered
    return out


def from_truth(bgr: np.ndarray, n: int, rng: np.random.Generator, target: str, half: int = HALF) -> list[Hint]:
    """n hints as a user who knows the colours would give them: uniform points, each the mean true chroma of the
    (2 half + 1)^2 patch around it (the benchmark's hints)."""
    truth = colour.record_target(colour.bgr_to_record(bgr), target)
    h, w = truth.shape[:2]
    hints = []
    for _ in range(n):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        patch = truth[max(y - half, 0) : y + half + 1, max(x - half, 0) : x + half + 1]
        a, b = patch.reshape(-1, 2).mean(axis=0)
        hints.append(Hint(x + 0.5, y + 0.5, (float(a), float(b))))
    return hints


def paint(bgr: np.ndarray, hints: list[Hint], target: str, radius: int) -> np.ndarray:
    """The naive baseline: each hint's colour painted onto a colour photo in a square of `radius` around its point,
    keeping the photo's luma."""
    out = bgr.copy()
    luma = colour.luma(bgr)
    for hint in hints:
        x, y = int(hint.x), int(hint.y)
        rows, cols = slice(max(y - radius, 0), y + radius + 1), slice(max(x - radius, 0), x + radius + 1)
        patch = luma[rows, cols]
        chroma = np.broadcast_to(np.float32(hint.chroma), (*patch.shape, 2))
        out[rows, cols] = colour.render_prediction(patch, chroma, target)
    return out


def simulated(record, key, target: str, none_share: float, mean_points: float = MEAN_POINTS):
    """Training hints drawn from a uint8 record (s, s, 4) tensor as Zhang et al. (2017) do: none for `none_share` of
    the photos (train.hint_none_share), else 1 + a geometric number of points with mean `mean_points`
    (train.hint_points; theirs: 8), Gaussian around the centre, each a 1-9 px patch of the true mean chroma.
    float32 (s, s, 3); `key` is a stateless seed pair."""
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    side = tf.shape(record)[0]
    sidef = tf.cast(side, tf.float32)
    hsv = tf.cast(record[..., : colour.V + 1], tf.float32)
    truth = colour.encode_target(hsv[..., colour.H], hsv[..., colour.S], target, xp=tnp, value=hsv[..., colour.V])
    u = tf.random.stateless_uniform([2], key, 1e-7, 1.0)
    # P(n) = p (1 - p)^(n - 1) with p = 1 / mean_points; mean_points 1: always one
    extra = tf.math.log(u[0]) / np.log(1.0 - 1.0 / mean_points) if mean_points > 1 else 0.0
    n = tf.minimum(1 + tf.cast(extra, tf.int32), MAX_POINTS)
    n = tf.where(u[1] < none_share, 0, n)
    centres = tf.random.stateless_normal([MAX_POINTS, 2], key + 1, mean=sidef / 2, stddev=sidef / 4)
    centres = tf.clip_by_value(tf.cast(tf.round(centres), tf.int32), 0, side - 1)
    halves = tf.random.stateless_uniform([MAX_POINTS], key + 2, 0, MAX_HALF + 1, dtype=tf.int32)
    pixels = tf.range(side)
    def inside(axis):  # (points, side): which rows (or columns) each patch spans
        return tf.abs(pixels[None, :] - centres[:, axis : axis + 1]) <= halves[:, None]
    boxes = tf.logical_and(inside(0)[:, :, None], inside(1)[:, None, :])
    boxes = tf.cast(tf.logical_and(boxes, (tf.range(MAX_POINTS) < n)[:, None, None]), tf.float32)
    means = tf.einsum("pyx,yxk->pk", boxes, truth) / tf.maximum(tf.reduce_sum(boxes, [1, 2]), 1.0)[:, None]
    cover = tf.reduce_sum(boxes, 0)
    chroma = tf.einsum("pyx,pk->yxk", boxes, means) / tf.maximum(cover, 1.0)[..., None]
    return tf.concat([chroma, tf.cast(cover > 0, tf.float32)[..., None]], axis=-1)
