"""Colorize throughput at full resolution: photos/s for 256x256 and 12 MP (4000x3000) photos.

    python -m benchmarks.colorize                 # the pipeline's models/
    python -m benchmarks.colorize --models DIR

Times Colorizer.colorize (what `python -m src.colorize` runs per photo, decoding and writing excluded) after one
warm-up call per size, on a real photo (scikit-image's astronaut) resized to each size.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

from benchmarks.common import save
from src.core.paths import MODEL_DIR

SIZES = {"256x256": (256, 256, 16), "12MP 4000x3000": (3000, 4000, 3)}  # (h, w, photos timed)


def model_and_photo(doc: str, argv: list[str] | None):
    """The command line (--models) parsed, that model loaded, and the gray test photo (scikit-image's astronaut)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    from skimage import data

    from src.model.predict import load

    return args, load(args.models), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)


def main(argv: list[str] | None = None) -> None:
    args, colorizer, photo = model_and_photo(__doc__, argv)
    results = {"model": str(args.models), "image_size": colorizer.image_size}
    for name, (h, w, n) in SIZES.items():
        gray = cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC)
        colorizer.colorize([gray])  # warm-up: graph tracing
        start = time.perf_counter()
        for _ in range(n):
            out = colorizer.colorize([gray])[0]
        seconds = (time.perf_counter() - start) / n
        assert out.shape == (h, w, 3)
        results[name] = {"photos_per_s": round(1 / seconds, 2), "s_per_photo": round(seconds, 3)}
        print(f"{name}: {1 / seconds:.2f} photos/s ({seconds * 1000:.0f} ms each)")
    # what the luma-guided upsampling costs at 12 MP, against the plain bilinear resize it replaces (same run)
    from src.model.predict import upsample_chroma

    h, w, _ = SIZES["12MP 4000x3000"]
    small = np.random.default_rng(0).uniform(-1, 1, (colorizer.image_size // 2, colorizer.image_size // 2, 2))
    small, luma = small.astype(np.float32), cv2.resize(photo, (w, h))
    times = {}
    for name, fn in (("bilinear", lambda: cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)),
                     ("guided", lambda: upsample_chroma(small, luma))):
        start = time.perf_counter()
        for _ in range(3):
            fn()
        times[name] = (time.perf_counter() - start) / 3
    results["12MP chroma upsampling s"] = {k: round(v, 3) for k, v in times.items()}
    print(f"12 MP chroma upsampling: guided {times['guided']:.2f} s, bilinear {times['bilinear']:.3f} s")
    results["peak_rss_mib"] = round(psutil.Process().memory_info().rss / 2**20)
    print(f"wrote {save('colorize', results)}")


if __name__ == "__main__":
    main()
