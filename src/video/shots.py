"""Shot cuts, found on the gray frames by PySceneDetect's content detector (luma only: there is no colour yet)."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

WIDTH = 256  # frames are compared at this width: cuts are large changes, and it makes detection cheap
THRESHOLD = 27.0  # PySceneDetect's default
MIN_SHOT = 8  # frames: a flash or a fast pan shorter than this is not a new shot


class Detector:
    """Feed every frame in order with `add`; `cuts()` then gives the indices of the frames that start a shot."""

    def __init__(self, rate: Fraction):
        self.rate, self.count, self.found = rate, 0, set()
        self.detector = ContentDetector(threshold=THRESHOLD, min_scene_len=MIN_SHOT, luma_only=True)

    def add(self, gray: np.ndarray) -> None:
        h, w = gray.shape
        small = cv2.resize(gray, (WIDTH, max(1, round(h * WIDTH / w))), interpolation=cv2.INTER_AREA)
        timecode = FrameTimecode(self.count, self.rate)
        self.found.update(c.frame_num for c in self.detector.process_frame(timecode, cv2.merge([small] * 3)))
        self.count += 1

    def cuts(self) -> frozenset[int]:
        if self.count:
            self.found.update(c.frame_num for c in self.detector.post_process(FrameTimecode(self.count - 1, self.rate)))
        return frozenset(c for c in self.found if 0 < c < self.count)
