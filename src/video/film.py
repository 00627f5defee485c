"""Colour a video: the network on every frame (batched), its chroma steadied along the motion, each frame rendered
at full resolution from its own gray as a photo is."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from src.video import streams, temporal

METHODS = ("temporal", "frames")  # frames: every frame coloured on its own (flickers; the benchmark's baseline)
BATCH = 8


def batched(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def colourer(colorizer, cuts: frozenset[int] = frozenset(), method: str = "temporal",
             batch: int = BATCH) -> streams.Colourer:
    """A function: the gray frames of one clip, in order -> its BGR frames, lazily."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")

    def run(grays: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        carrier = temporal.Carrier() if method == "temporal" else None
        index = 0
        for frames in batched(grays, batch):
            for gray, chroma in zip(frames, colorizer.predict(colorizer.model_input(frames), batch)):
                if carrier is not None:
                    small = cv2.resize(gray, chroma.shape[1::-1], interpolation=cv2.INTER_AREA)
                    chroma = carrier.step(small, chroma, cut=index in cuts)
                yield colorizer.render(gray, chroma)
                index += 1

    return run


def colour_clip(colorizer, clip: streams.Clip, out: Path, metadata: dict[str, str], method: str = "temporal",
                progress: Callable[[int], None] = lambda n: None) -> None:
    """Write `out`, the coloured `clip` (scanned by streams.scan), atomically."""
    streams.transcode(clip, out, colourer(colorizer, clip.cuts, method), metadata, progress)
