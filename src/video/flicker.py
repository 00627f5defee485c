"""How much a coloured video flickers, measured a frame at a time (flat memory in the clip's length).

CDC, colour distribution consistency (Liu et al. 2021, "Temporally Consistent Video Colorization with Deep Feature
Propagation and Self-regularization Learning"): the Jensen-Shannon divergence between the Lab a and b histograms of
frames t and t+k, for k = 1, 2 and 4, averaged. A steady clip scores near its truth's own CDC, which is not zero:
things move and the camera pans.

Warp error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): frame t's chroma carried to t+1 along the
optical flow of the gray frames and compared with frame t+1's, over the pixels a forward-backward check keeps.
It flatters a pale result (no colour, no change), so it is reported beside CDC, not aimed at.
"""
from __future__ import annotations

from collections import deque

import cv2
import numpy as np
from scipy.spatial.distance import jensenshannon

from src.video import temporal

STEPS = (1, 2, 4)
BINS = 64  # per Lab channel (OpenCV's 8-bit a and b: 0..255)
WIDTH = 320  # the warp error's working width
OCCLUDED = 1.0  # px: forward-backward mismatch beyond which a pixel is left out of the warp error


def ab_histograms(bgr: np.ndarray) -> np.ndarray:
    """(2, BINS): the frame's Lab a and b distributions."""
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    hist = np.stack([np.bincount(lab[..., c].ravel() // (256 // BINS), minlength=BINS) for c in (1, 2)]).astype(float)
    return hist / hist.sum(axis=1, keepdims=True)


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, 0..1) averaged over the a and b channels."""
    return float(np.mean([jensenshannon(p[c], q[c], base=2) ** 2 for c in range(len(p))]))


class Meter:
    """Feed a clip's coloured frames in order (with its gray frames for the warp error); read `cdc` and
    `warp_error`. `cuts`: frames that start a new shot; no pair of frames across a cut is compared."""

    def __init__(self, cuts: frozenset[int] = frozenset()):
        self.cuts, self.index = cuts, 0
        self.recent: deque[np.ndarray] = deque(maxlen=max(STEPS))
        self.divergences: dict[int, list[float]] = {k: [] for k in STEPS}
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.previous: tuple[np.ndarray, np.ndarray] | None = None  # (gray, ab) of the last frame, at WIDTH
        self.warp_errors: list[float] = []

    def add(self, bgr: np.ndarray, gray: np.ndarray | None = None) -> None:
        if self.index in self.cuts:
            self.recent.clear()
            self.previous = None
        hist = ab_histograms(bgr)
        for k in STEPS:
            if len(self.recent) >= k:
                self.divergences[k].append(_js(self.recent[-k], hist))
        self.recent.append(hist)
        if gray is not None:
            self._warp(bgr, gray)
        self.index += 1

    def _warp(self, bgr: np.ndarray, gray: np.ndarray) -> None:
        h, w = gray.shape
        size = (WIDTH, max(2, round(h * WIDTH / w)))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        ab = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2LAB)[..., 1:]
        ab = ab.astype(np.float32) / 255.0
        if self.previous is not None:
            before, before_ab = self.previous
            where, mismatch, inside = temporal.follow(self.flow, small, before)
            carried = cv2.remap(before_ab, where[..., 0], where[..., 1], cv2.INTER_LINEAR)
            kept = (mismatch < OCCLUDED**2) & inside
            if kept.any():
                self.warp_errors.append(float(np.mean(np.sum((ab - carried) ** 2, axis=-1)[kept])))
        self.previous = (small, ab)

    @property
    def cdc(self) -> float:
        return float(np.mean([np.mean(d) for d in self.divergences.values() if d])) if self.divergences[1] else 0.0

    @property
    def warp_error(self) -> float:
        return float(np.mean(self.warp_errors)) if self.warp_errors else 0.0
