"""Shot cuts, found on the gray frames by PySceneDetect: its content detector for hard cuts (luma only: there is
no colour yet) and its threshold detector for fades through black, which the first misses (a fade changes the
picture slowly) and across which colour must not be carried either."""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector, ThresholdDetector

WIDTH = 256  # frames are compared at this width: cuts are large changes, and it makes detection cheap
THRESHOLD = 27.0  # PySceneDetect's default
MIN_SHOT = 8  # frames: a flash or a fast pan shorter than this is not a new shot


class Detector:
    """Feed every frame in order with `add`; `cuts()` then gives the indices of the frames that start a shot."""

    def __init__(self, rate: Fraction):
        self.rate, self.count, self.found = rate, 0, set()
        self.detectors = (ContentDetector(threshold=THRESHOLD, min_scene_len=MIN_SHOT, luma_only=True),
                          ThresholdDetector(min_scene_len=MIN_SHOT))

    def add(self, gray: np.ndarray) -> None:
        h, w = gray.shape
        small = cv2.resize(gray, (WIDTH, max(1, round(h * WIDTH / w))), interpolation=cv2.INTER_AREA)
        timecode, image = FrameTimecode(self.count, self.rate), cv2.merge([small] * 3)
        for detector in self.detectors:
            self.found.update(c.frame_num for c in detector.process_frame(timecode, image))
        self.count += 1

    def cuts(self) -> frozenset[int]:
        if self.count:
            last = FrameTimecode(self.count - 1, self.rate)
            for detector in self.detectors:
                self.found.update(c.frame_num for c in detector.post_process(last))
        return frozenset(c for c in self.found if 0 < c < self.count)
