"""Training throughput: our tf.data pipeline vs a bare model.fit on in-RAM arrays vs the original pickled-shard loop.

    python -m benchmarks.training [--photos ../shared/data/imagenet-sample] [--seconds 60]

For `seed` at 128 px and the default U-Net at 64 px, each variant runs in its own process (for a clean peak RSS):
  pipeline: src.training.fit's tf.data input (shards on disk, shuffle, flips);
  in_ram:   model.fit on numpy arrays already in memory (the ceiling: no input work at all);
  original: the tutorial's way: a pickled shard loaded into RAM, batches from a Python generator.
Results go to experiments/benchmarks/training.json; the ratio pipeline / in_ram should be >= 1.0.
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras  # noqa: E402

import src  # noqa: F401  first: the numeric settings (src/core/determinism.py) precede keras
from benchmarks.common import run_measured, save

DEFAULT_PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-sample"
CASES = {"seed_128": (128, {"arch": "seed"}), "unet_64": (64, {})}


def prepare(photos: Path, work: Path, size: int) -> Path:
    from src.core.params import HsvSplitParams, ShardParams
    from src.stages import hsv_split, shard

    out = work / f"{size}px"
    hsv_split.run(HsvSplitParams(image_size=size), raw=photos, out=out / "hsv", report=out / "r.csv",
                  metrics=out / "m.json")
    shard.run(ShardParams(val_ratio=0.05, test_ratio=0.05), hsv=out / "hsv", out=out / "shards")
    return out / "shards"


class Clock(keras.callbacks.Callback):
    """img/s over the batches after a warm-up; stops training once `seconds` have been timed."""

    def __init__(self, batch_size: int, seconds: float, warmup: int = 3):
        super().__init__()
        self.batch_size, self.seconds, self.warmup = batch_size, seconds, warmup
        self.batches, self.timed, self.start = 0, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.warmup:
            self.start = time.perf_counter()
        elif self.start is not None:
            self.timed += 1
            if time.perf_counter() - self.start > self.seconds:
                self.model.stop_training = True

    def rate(self) -> float:
        return self.timed * self.batch_size / (time.perf_counter() - self.start)


def worker(variant: str, shards_dir: str, model: str, seconds: float, result_file: str) -> None:
    """Runs in a child process: one long fit, timed after warm-up batches; writes img/s."""
    import numpy as np

    from src.core.params import ModelParams, TrainParams
    from src.data.pipeline import InputSpec, arrays, dataset
    from src.data.shards import ShardSet
    from src.training import fit

    shards = ShardSet.open(shards_dir)
    p = TrainParams(model=ModelParams(**json.loads(model)), batch_size=16)
    fit.configure(p)
    m = fit.compile_model(p, shards.image_size, 1000)
    clock = Clock(p.batch_size, seconds)
    many = 10**6
    if variant == "pipeline":
        data = dataset(shards, "train", InputSpec(), p.batch_size, training=True, seed=0, flip=True).repeat()
        m.fit(data, steps_per_epoch=many, epochs=1, verbose=0, callbacks=[clock])
    elif variant == "in_ram":
        x, y = arrays(shards.load("train"), InputSpec())
        m.fit(x, y, batch_size=p.batch_size, epochs=many, verbose=0, shuffle=True, callbacks=[clock])
    else:  # original: pickle a shard into RAM, then a Python generator of random batches
        path = Path(result_file).with_suffix(".pkl")
        x, y = arrays(shards.load("train"), InputSpec())
        path.write_bytes(pickle.dumps((x, y)))
        del x, y
        x, y = pickle.loads(path.read_bytes())

        def batches():
            rng = np.random.default_rng(0)
            while True:
                idx = rng.integers(0, len(x), p.batch_size)
                yield x[idx], y[idx]

        m.fit(batches(), steps_per_epoch=many, epochs=1, verbose=0, callbacks=[clock])
    Path(result_file).write_text(json.dumps({"img_per_s": clock.rate()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--seconds", type=float, default=40.0, help="timed training per variant")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.worker[2], float(args.worker[3]), args.worker[4])
        return
    if not args.photos.is_dir():
        sys.exit(f"{args.photos} not found: pass --photos")
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    results: dict = {}
    try:
        for case, (size, model) in CASES.items():
            shards = prepare(args.photos, work, size)
            for variant in ("pipeline", "in_ram", "original"):
                out = work / f"{case}-{variant}.json"
                wall, peak = run_measured([sys.executable, "-m", "benchmarks.training", "--worker", variant,
                                           str(shards), json.dumps(model), str(args.seconds), str(out)], Path.cwd())
                results[f"{case}_{variant}_img_per_s"] = json.loads(out.read_text())["img_per_s"]
                results[f"{case}_{variant}_peak_mib"] = peak
                print(case, variant, f"{results[f'{case}_{variant}_img_per_s']:.1f} img/s, peak {peak:.0f} MiB",
                      flush=True)
            results[f"{case}_pipeline_vs_in_ram"] = (results[f"{case}_pipeline_img_per_s"]
                                                     / results[f"{case}_in_ram_img_per_s"])
            results[f"{case}_pipeline_vs_original"] = (results[f"{case}_pipeline_img_per_s"]
                                                       / results[f"{case}_original_img_per_s"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    print(f"saved {save('training', results)}")


if __name__ == "__main__":
    main()
