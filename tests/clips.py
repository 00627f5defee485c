"""Video clips the tests make themselves: a camera panning over a real photo (known motion, known truth), with a
short audio track, so video tests run without ../shared."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from src.stages.download import sample_photos


def real_photo(name: str = "china.jpg") -> np.ndarray:
    (path,) = [p for p, _ in sample_photos() if p.name == name]
    return cv2.imread(str(path))


def pan(photo: np.ndarray, frames: int, size: tuple[int, int] = (128, 96), step: int = 3,
        start: int = 0) -> list[np.ndarray]:
    """BGR frames (h, w) = size[::-1] of a window moving `step` px to the right per frame over `photo`."""
    w, h = size
    scale = h * 1.5 / photo.shape[0]
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    top = (photo.shape[0] - h) // 2
    return [photo[top : top + h, start + i * step : start + i * step + w].copy() for i in range(frames)]


def write(path: Path, frames: list[np.ndarray], fps: int | Fraction = 12, audio: bool = True, codec: str = "libx264",
          pts: list[int] | None = None) -> Path:
    """An MP4 (or the container `path`'s suffix names) of `frames`, with a sine tone as AAC audio when `audio`.
    `pts`: each frame's timestamp in 1/fps units (a variable frame rate when not 0, 1, 2, ...)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.time_base = Fraction(1, fps)
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i, bgr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = len(frames) / fps
            t = np.arange(int(16000 * seconds), dtype=np.float32) / 16000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return path


def first_frames(source: Path, dest: Path, frames: int) -> Path:
    """The first `frames` of a real clip at its size and rate (re-encoded, no audio): the clip a test colours."""
    with av.open(str(source)) as c:
        video = c.streams.video[0]
        kept = [f.to_ndarray(format="bgr24") for f, _ in zip(c.decode(video), range(frames))]
        rate = video.average_rate
    return write(dest, kept, fps=rate, audio=False)


def panning_clip(path: Path, frames: int = 24, **kwargs) -> Path:
    return write(path, pan(real_photo(), frames), **kwargs)


def probe(path: Path) -> dict:
    """What a test checks of a video: frames (decoded), size, rate, codec, audio (codec, seconds), tags."""
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        audio = c.streams.audio[0] if c.streams.audio else None
        frames = sum(1 for _ in c.decode(video))
        return {"frames": frames, "size": (video.codec_context.width, video.codec_context.height),
                "rate": video.average_rate, "codec": video.codec_context.name,
                "audio": audio and (audio.codec_context.name, float(audio.duration * audio.time_base)),
                "tags": dict(c.metadata)}
