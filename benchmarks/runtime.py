"""The released model on Keras beside onnxruntime, as users run it: `python -m src.colorize --runtime R`, in one run.

    python -m benchmarks.runtime

Per runtime, two fresh processes of `python -m src.colorize` (release/ and the page take the same path):
- 256x256: 40 gray photos (scikit-image's astronaut), batches of 8. photos/s over the batches after the first
  (when each result file appears), the time from the start to the first result (imports, model, first batch
  included), and the process's peak RSS.
- 12 MP (4000x3000): 3 photos, one per batch; seconds per photo after the first.
- The network alone, in this process: ms per photo in batches of 8 at the release's inference size, Keras' compiled
  graph beside the onnxruntime session: the most ONNX can gain however little work the two paths share.
The ONNX files are built into the cache first (as `python -m src.export` builds them), outside the timings. Writes
experiments/benchmarks/runtime.json.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.common import save
from src.core.paths import ROOT

RUNTIMES = ("keras", "onnx")
SIZES = {"256x256": (256, 256, 40, 8), "12MP 4000x3000": (3000, 4000, 3, 1)}  # (h, w, photos, batch)


def colorize_run(runtime: str, folder: Path, out: Path, batch: int) -> dict:
    """One `python -m src.colorize` process: when each result appeared, its peak RSS."""
    import psutil

    start = time.time()
    proc = psutil.Popen([sys.executable, "-m", "src.colorize", str(folder), "--out", str(out), "--runtime", runtime,
                         "--batch-size", str(batch)], cwd=ROOT, stdout=tempfile.TemporaryFile(),
                        stderr=tempfile.TemporaryFile())
    peak, seen = 0, {}
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
        except psutil.Error:
            pass
        for path in out.glob("*.png"):
            seen.setdefault(path.name, time.time() - start)
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"colorize --runtime {runtime} failed ({proc.returncode})")
    times = sorted(seen.get(p.name, time.time() - start) for p in out.glob("*.png"))
    return {"times": times, "peak_rss_mib": peak / 2**20}


def network_ms(batch: int = 8, repeats: int = 10) -> dict[str, float]:
    """{runtime: ms per photo} of the release's automatic network alone, after two warm-up batches."""
    import numpy as np
    import tensorflow as tf

    from src.model import onnx_runtime, release

    colorizer = release.load()
    size = colorizer.image_size
    gray = np.random.default_rng(0).integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
    graph = tf.function(lambda x: colorizer.plain(x, training=False))
    network = onnx_runtime.OnnxNetwork(onnx_runtime.files()["automatic"])
    forward = {"keras": lambda: graph(tf.constant(gray)).numpy(), "onnx": lambda: network.forward(gray)}
    timings = {}
    for runtime, once in forward.items():
        once(), once()
        start = time.perf_counter()
        for _ in range(repeats):
            once()
        timings[runtime] = round((time.perf_counter() - start) / repeats / batch * 1000, 1)
    return timings


def main(argv: list[str] | None = None) -> None:
    import argparse

    from skimage import data

    from src.model import onnx_runtime, release

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:  # built into the cache (in a child, as colorize builds them) unless already there and checked
        onnx_runtime.files()
    except release.ReleaseError as exc:
        raise SystemExit(f"the release's ONNX files: {exc}") from None
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size, (h, w, n, batch) in SIZES.items():
            folder = Path(tmp) / size
            folder.mkdir()
            photo = cv2.resize(gray, (w, h), interpolation=cv2.INTER_CUBIC)
            for i in range(n):
                cv2.imwrite(str(folder / f"p{i:02d}.png"), photo)
            for runtime in RUNTIMES:
                got = colorize_run(runtime, folder, Path(tmp) / f"out-{size}-{runtime}", batch)
                t = got["times"]
                row = results.setdefault(runtime, {})
                if batch > 1:  # whole batches land together: rate from the first batch's results to the last's
                    row[f"{size} photos/s"] = round((n - batch) / (t[-1] - t[batch - 1]), 2)
                    row["first photo s"] = round(t[0], 2)
                    row["peak RSS MiB (256x256 run)"] = round(got["peak_rss_mib"])
                else:
                    row[f"{size} s/photo"] = round((t[-1] - t[0]) / (n - 1), 2)
                    row["peak RSS MiB (12 MP run)"] = round(got["peak_rss_mib"])
                print(f"{runtime} {size}: {row}", flush=True)
    for runtime, ms in network_ms().items():  # last: this process loads TensorFlow, the colorize runs above did not
        results[runtime]["network alone ms/photo"] = ms
    print(f"network alone: {results['keras']['network alone ms/photo']} ms/photo on Keras, "
          f"{results['onnx']['network alone ms/photo']} on onnxruntime")
    keras, onnx = results["keras"], results["onnx"]
    results["onnx / keras"] = {key: round(onnx[key] / keras[key], 2) for key in keras}
    print(f"onnx / keras: {results['onnx / keras']}")
    print(f"wrote {save('runtime', results)}")


if __name__ == "__main__":
    main()
