"""Video: frame by frame beside colour carried along the motion, and the truth itself, in one run.

    python -m benchmarks.video                     # the clips of ../shared/data/video
    python -m benchmarks.video --clips a.mp4 b.mp4 --frames 120

Per clip and overall (frames pooled): PSNR (of the mean squared error over the frames) and colourfulness, flicker
as CDC (docs/video.md) and the warp error, for three columns: `frames` (every frame coloured on its own),
`temporal` (the default) and `truth` (the clip itself: its own CDC is the floor a steady colouring can reach).
The network runs once per frame and both methods decode the same outputs, so the columns differ only by the
method. Speed: frames per second of `python -m src.colorize CLIP --video METHOD` (decode, colour, encode) at
640x360 on this machine, both methods, after the columns (nothing else running). Writes
experiments/benchmarks/video.json and docs/images/video_strip.jpg.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from benchmarks.common import save
from src.core.paths import ROOT
from src.data import metrics
from src.video import film, flicker, streams, temporal

CLIPS = ROOT.parent / "shared" / "data" / "video"
COLUMNS = ("frames", "temporal", "truth")
SPEED_CLIP = "traffic.mp4"  # the 640x360 one
STRIP_CLIP, STRIP_FRAMES = "horses.mp4", (20, 60, 100)
STRIP = ROOT / "docs" / "images" / "video_strip.jpg"


class Column:
    """One column's running figures over a clip."""

    def __init__(self, cuts: frozenset[int]):
        self.meter, self.squared, self.colourful = flicker.Meter(cuts), [], []

    def add(self, bgr: np.ndarray, gray: np.ndarray, truth: np.ndarray) -> None:
        self.meter.add(bgr, gray)
        self.squared.append(metrics.rmse(bgr, truth) ** 2)
        self.colourful.append(metrics.colourfulness(bgr))

    def row(self) -> dict:
        # PSNR of the clip's mean squared error: per-frame PSNR is unbounded on the black frames of a fade
        mse = float(np.mean(self.squared))
        return {"PSNR": float(10 * np.log10(metrics.PEAK**2 / mse)) if mse else None, "mse": mse,
                "colourfulness": float(np.mean(self.colourful)), "CDC": self.meter.cdc,
                "warp error": self.meter.warp_error, "frames": len(self.squared)}


def score(colorizer, clip: streams.Clip, limit: int | None, strip: list | None) -> dict:
    columns = {name: Column(clip.cuts) for name in COLUMNS}
    carrier = temporal.Carrier()
    with av.open(str(clip.path)) as source:
        frames = (f.to_ndarray(format="bgr24") for f in source.decode(video=0))
        for start, batch in enumerate(film.batched(frames, film.BATCH)):
            if limit and start * film.BATCH >= limit:
                break
            grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in batch]
            for k, (truth, gray, chroma) in enumerate(zip(batch, grays, colorizer.predict(
                    colorizer.model_input(grays), film.BATCH))):
                index = start * film.BATCH + k
                small = cv2.resize(gray, chroma.shape[1::-1], interpolation=cv2.INTER_AREA)
                out = {"frames": colorizer.render(gray, chroma),
                       "temporal": colorizer.render(gray, carrier.step(small, chroma, cut=index in clip.cuts)),
                       "truth": truth}
                for name in COLUMNS:
                    columns[name].add(out[name], gray, truth)
                if strip is not None and index in STRIP_FRAMES:
                    strip.append([cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), out["frames"], out["temporal"], truth])
    return {name: column.row() for name, column in columns.items()}


def speed(clip: Path, method: str) -> float:
    """Frames per second of the product's own command on `clip`: its frames over the time its progress bar was
    open (decode, colour, encode; the imports and the model's loading before it are left out)."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-m", "src.colorize", str(clip), "--out", out, "--video", method],
                              cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    frames, *clock = re.findall(r"(\d+)/\1 \[(\d+):(\d+)(?::(\d+))?<", done.stderr)[-1]
    parts = [int(x) for x in clock if x]
    seconds = parts[-1] + 60 * parts[-2] + (3600 * parts[0] if len(parts) == 3 else 0)
    return int(frames) / max(seconds, 1)


def pooled(rows: list[dict]) -> dict:
    """Every clip's frames together: means weighted by frames, PSNR from the pooled squared error."""
    total = sum(r["frames"] for r in rows)
    out = {key: sum(r[key] * r["frames"] for r in rows) / total for key in rows[0] if key not in ("frames", "PSNR")}
    return {"PSNR": float(10 * np.log10(metrics.PEAK**2 / out["mse"])) if out["mse"] else None, **out, "frames": total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", type=Path, help=f"video files (default: {CLIPS}/*.mp4)")
    parser.add_argument("--frames", type=int, help="score at most this many frames per clip (default: all)")
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True,
                        help="time src.colorize on the 640x360 clip (default: on; off on a busy machine)")
    args = parser.parse_args(argv)
    paths = args.clips or sorted(CLIPS.glob("*.mp4"))
    if not paths:
        parser.error(f"no clips: {CLIPS} is absent; pass --clips")
    from src.model import onnx_runtime

    colorizer = onnx_runtime.load()
    results, strip = {"clips": {}}, []
    for path in paths:
        clip = streams.scan(path, 3840 * 2160)
        started = time.perf_counter()
        rows = score(colorizer, clip, args.frames, strip if path.name == STRIP_CLIP else None)
        results["clips"][path.name] = {"size": f"{clip.width}x{clip.height}", "cuts": sorted(clip.cuts), **rows}
        print(f"{path.name} ({time.perf_counter() - started:.0f} s): "
              + "; ".join(f"{n} {r['PSNR'] or 0:.2f} dB, CDC {r['CDC']:.5f}" for n, r in rows.items()), flush=True)
    results["overall"] = {name: pooled([c[name] for c in results["clips"].values()]) for name in COLUMNS}
    overall = results["overall"]
    results["goals"] = {
        "temporal CDC / truth's (<= 1.5)": overall["temporal"]["CDC"] / overall["truth"]["CDC"],
        "temporal CDC / frame by frame's (<= 0.5)": overall["temporal"]["CDC"] / overall["frames"]["CDC"],
        "temporal PSNR - frame by frame's, dB (>= -0.1)": overall["temporal"]["PSNR"] - overall["frames"]["PSNR"]}
    speed_clip = next((p for p in paths if p.name == SPEED_CLIP), None)
    if speed_clip is not None and args.speed:
        results["fps at 640x360 (src.colorize, 2 cores)"] = {m: speed(speed_clip, m) for m in film.METHODS}
    for key, value in results.items():
        if key != "clips":
            print(f"{key}: {value}")
    if strip:
        rows = [np.concatenate([cv2.resize(im, (320, 180)) for im in row], axis=1) for row in strip[:3]]
        STRIP.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(STRIP), np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {save('video', results)}")


if __name__ == "__main__":
    main()
