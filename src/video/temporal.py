"""Colour that follows the motion: each frame's predicted chroma blended with the colour already given to the
previous frame, carried along the optical flow of the gray frames (OpenCV's DIS), trusting the prediction wherever
the flow fails (a forward-backward check) or the carried surface does not look the same (its gray level), and
starting afresh at a shot cut.

It is a recursive filter along motion: with CARRY 0.9 a pixel's colour is a weighted mean over the last ~10 frames
of the same surface, which steadies what the network guesses differently frame to frame (flicker), and a new
object or an uncovered background takes the network's colour at once. Everything runs on the model's chroma grid
(about 144 x 144), so it costs little beside the network.
"""
from __future__ import annotations

import cv2
import numpy as np

# Chosen on the six clips of ../shared/data/video, every frame (no other real footage is here, so it flatters them):
# 0.85 / 0.9 / 0.93 gave CDC 0.52 / 0.47 / 0.44 of frame by frame's and 1.17 / 1.06 / 0.98 of the truth's, PSNR
# within 0.01 dB. 0.93 flickers less than the truth itself, which a right colouring does not (docs/video.md).
CARRY = 0.9  # weight of the carried colour where the flow holds
CONSISTENT = 1.0  # grid cells: a forward-backward mismatch of this much makes the flow's trust exp(-1/2)
SAME_LIGHT = 12.0  # gray levels: a carried cell this much darker or brighter than the frame's makes it exp(-1/2)
# gray levels: colour carried from a cell darker than this was never seen, so it is trusted only in proportion (the
# network guesses colour on black frames; deer-cuts.mp4 carried that guess into a fade-in: 1.8x frame by frame's CDC)
DARK = 16.0


class Carrier:
    """Feed the frames of one clip in order; `step` returns the chroma to render for each."""

    def __init__(self, carry: float = CARRY):
        self.carry = carry
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.gray: np.ndarray | None = None
        self.chroma: np.ndarray | None = None

    def step(self, gray: np.ndarray, predicted: np.ndarray, cut: bool = False) -> np.ndarray:
        """gray: the frame's uint8 luma at the chroma grid's size (h, w); predicted: the network's chroma (h, w, c).
        `cut`: the frame starts a new shot, so nothing is carried into it."""
        if cut or self.gray is None or self.gray.shape != gray.shape:
            chroma = predicted
        else:
            weight = self.carry * self.trust(gray)[..., None]
            chroma = weight * self.carried + (1.0 - weight) * predicted
        self.gray, self.chroma = gray, chroma.astype(np.float32)
        return self.chroma

    def trust(self, gray: np.ndarray) -> np.ndarray:
        """Per cell of the new frame, 0..1: how far its backward flow can be trusted. Also sets `carried`, the
        previous frame's chroma warped onto this one."""
        where, mismatch, inside = follow(self.flow, gray, self.gray)
        self.carried = cv2.remap(self.chroma, where[..., 0], where[..., 1], cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        # the carried surface must also look the same (a fade, a flash or a new object under a smooth flow does not),
        # and have been visible
        seen = cv2.remap(self.gray, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        change = (gray.astype(np.float32) - seen) ** 2
        visible = np.clip(seen / DARK, 0.0, 1.0)
        return np.exp(-mismatch / (2 * CONSISTENT**2) - change / (2 * SAME_LIGHT**2)) * inside * visible


def follow(flow, gray: np.ndarray, before: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of `gray` was in `before` (h, w, 2), the squared mismatch of the round trip back and forth
    (occluded or wrong where large), and whether that place lies inside the frame."""
    back = flow.calc(gray, before, None)
    ahead = flow.calc(before, gray, None)
    h, w = gray.shape
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
    where = grid + back
    there = cv2.remap(ahead, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (where[..., 0] >= 0) & (where[..., 0] <= w - 1) & (where[..., 1] >= 0) & (where[..., 1] <= h - 1)
    return where, np.sum((back + there) ** 2, axis=-1), inside
