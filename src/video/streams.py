"""Video in and out with PyAV (FFmpeg's libraries, from a PyPI wheel): scan, decode, encode, keep the audio.

A clip is read twice and never held: `scan` decodes its gray frames once to check it (frames, a constant rate, the
pixel limit) and find its shot cuts; `transcode` decodes it again, hands the frames to a colouring function one at
a time and writes what comes back as H.264 (yuv420p, moov first: every browser plays it), the input's audio copied
alongside. The output is written to a temporary file and renamed only when complete.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from src.core.files import atomic_path
from src.data.colour import luma as colour_luma
from src.video import shots

SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv"})
CODEC, PIXEL_FORMAT, CRF = "libx264", "yuv420p", "18"
COPIED_AUDIO = frozenset({"aac", "mp3", "opus", "ac3", "alac", "flac"})  # what MP4 holds as it is; others become AAC
RATE_TOLERANCE = 0.25  # a frame gap this far (as a share of 1/fps) from the nominal one means a variable rate


class BadVideo(ValueError):
    """A video that cannot be coloured; the message is the one-line reason."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


@dataclass(frozen=True)
class Clip:
    """What one scan of a video found: its size, rate, frame count, audio and shot cuts."""

    path: Path
    width: int
    height: int
    rate: Fraction  # frames per second
    frames: int
    audio: str | None  # the first audio stream's codec, if any
    cuts: frozenset[int] = field(default_factory=frozenset)  # indices of frames that start a new shot

    @property
    def seconds(self) -> float:
        return float(self.frames / self.rate)


def _open(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise BadVideo(f"not a readable video ({exc.strerror or type(exc).__name__})") from exc


def _video_stream(container):
    if not container.streams.video:
        raise BadVideo("no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise BadVideo("unknown video codec: FFmpeg has no decoder for it")
    stream.thread_type = "AUTO"
    return stream


def scan(path: Path, max_pixels: int, max_frames: int | None = None, max_seconds: float | None = None) -> Clip:
    """Decode every frame once, in gray: check the clip and find its shot cuts. Raises BadVideo with the reason.

    `max_frames` and `max_seconds` are enforced while reading (the page's limits), from the header first.
    """
    with _open(path) as container:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise BadVideo(f"{width}x{height} frames are over the {max_pixels:,}-pixel limit")
        if width % 2 or height % 2:
            raise BadVideo(f"{width}x{height}: H.264 in 4:2:0 needs even sides")
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise BadVideo("no frame rate")
        limit = min(x for x in (max_frames, max_seconds and int(max_seconds * rate) + 1, 2**62) if x)
        if stream.frames > limit:
            raise BadVideo(_over(limit, rate))
        detector = shots.Detector(rate)
        nominal = 1 / (rate * stream.time_base) if stream.time_base else None
        frames, previous = 0, None
        try:
            for frame in container.decode(stream):
                if frames >= limit:
                    raise BadVideo(_over(limit, rate))
                if nominal and frame.pts is not None and previous is not None:
                    gap = frame.pts - previous
                    if abs(gap - nominal) > RATE_TOLERANCE * nominal:
                        raise BadVideo(f"variable frame rate (a gap of {float(gap * stream.time_base) * 1000:.0f} ms "
                                       f"at frame {frames}, nominal {1000 / float(rate):.0f} ms): make it constant "
                                       "first, e.g. ffmpeg -i IN -fps_mode cfr OUT")
                previous = frame.pts
                detector.add(frame.to_ndarray(format="gray"))
                frames += 1
        except av.FFmpegError as exc:
            reason = exc.strerror or type(exc).__name__
            raise BadVideo(f"corrupt or truncated after {frames} frames ({reason})") from exc
        if not frames:
            raise BadVideo("no frames")
        if stream.frames and frames < stream.frames:
            raise BadVideo(f"truncated: {frames} of its {stream.frames} frames decode")
        audio = _codec(container.streams.audio[0]) if container.streams.audio else None
    return Clip(path, width, height, Fraction(rate), frames, audio, detector.cuts())


def _codec(stream) -> str:
    """The codec's own name (mp3), not its decoder's (mp3float)."""
    return stream.codec_context.codec.canonical_name if stream.codec_context else "unknown"


def _over(limit: int, rate: Fraction) -> str:
    return f"longer than the limit of {limit:,} frames ({float(limit / rate):.0f} s)"


Colourer = Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]]


def transcode(clip: Clip, out: Path, colour: Colourer, metadata: dict[str, str],
              progress: Callable[[int], None] = lambda n: None) -> None:
    """Write `out`: `colour` maps the clip's gray frames (uint8, h x w) to BGR frames, one out per one in, lazily;
    the audio is copied (or made AAC where MP4 cannot hold it). `out` appears only when complete."""
    with atomic_path(out) as tmp, _open(clip.path) as source:
        video_in = _video_stream(source)
        audio_in = source.streams.audio[0] if source.streams.audio else None
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart+use_metadata_tags"}) as sink:
            sink.metadata.update(metadata)
            video_out = sink.add_stream(CODEC, rate=clip.rate, options={"crf": CRF, "preset": "veryfast"})
            video_out.width, video_out.height, video_out.pix_fmt = clip.width, clip.height, PIXEL_FORMAT
            audio = _AudioCopy(sink, audio_in) if audio_in is not None else None

            def gray_frames() -> Iterator[np.ndarray]:
                streams = (video_in, audio_in) if audio_in is not None else (video_in,)
                for packet in source.demux(*streams):
                    if packet.stream is audio_in:
                        audio.add(packet)
                        continue
                    for frame in packet.decode():
                        yield colour_luma(frame.to_ndarray(format="bgr24"))

            written = 0
            try:
                for bgr in colour(gray_frames()):
                    frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
                    frame.pts = written
                    frame.time_base = 1 / clip.rate
                    sink.mux(video_out.encode(frame))
                    written += 1
                    progress(1)
                sink.mux(video_out.encode(None))
                if audio is not None:
                    audio.close()
            except av.FFmpegError as exc:  # the scan passed: the file changed, or its audio is broken
                raise BadVideo(f"failed after {written} frames ({exc.strerror or type(exc).__name__})") from exc
        if written != clip.frames:
            raise BadVideo(f"{written} frames coloured of {clip.frames}: the file changed while being read")


class _AudioCopy:
    """The input's audio into the output: packets copied when MP4 can hold the codec, otherwise AAC."""

    def __init__(self, sink, stream):
        self.sink, self.source = sink, stream
        self.copy = _codec(stream) in COPIED_AUDIO
        if self.copy:
            self.stream = sink.add_stream_from_template(stream)
        else:
            self.stream = sink.add_stream("aac", rate=stream.codec_context.sample_rate)
            self.resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout,
                                               rate=stream.codec_context.sample_rate)

    def add(self, packet) -> None:
        if packet.dts is None:  # a demuxer's flush packet
            return
        if self.copy:
            packet.stream = self.stream
            self.sink.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for part in self.resampler.resample(frame):
                self.sink.mux(self.stream.encode(part))

    def close(self) -> None:
        if not self.copy:
            for part in self.resampler.resample(None):
                self.sink.mux(self.stream.encode(part))
            self.sink.mux(self.stream.encode(None))


def metadata(path: Path) -> dict[str, str]:
    """A video's container metadata (what `transcode` wrote into it)."""
    with _open(path) as container:
        return dict(container.metadata)
