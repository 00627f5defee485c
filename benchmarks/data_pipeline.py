"""Data pipeline benchmark: hsv-split vs a bare OpenCV loop, tf.data throughput, stage memory, no-change repro.

    python -m benchmarks.data_pipeline [--photos ../shared/data/imagenet-sample]

Figures go to experiments/benchmarks/data_pipeline.json and are printed as a table for docs/benchmarks.md.
Ratios compare runs made in the same process on the same files, since this machine is noisy.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from benchmarks.common import save, stage
from tests.repo import copy_repo, dvc

DEFAULT_PHOTOS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-sample"


def bare(path: str, size: int = 64) -> int:
    """What hsv-split does at its core, with nothing else: decode, centre crop, resize, convert."""
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    s = min(h, w)
    img = cv2.resize(img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s], (size, size),
                     interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2HSV).nbytes


def bare_loop(files: list[str], workers: int) -> float:
    """Seconds for the bare loop on all cores, pool start included (as in hsv-split)."""
    start = time.perf_counter()
    with mp.get_context("fork").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        sum(pool.imap(bare, files, chunksize=4))
    return time.perf_counter() - start


def hsv_split_loop(photos: Path, out: Path, image_size: int = 64) -> float:
    """Seconds for hsv-split's run() over the same files, in this process (no interpreter start-up)."""
    from src.core.params import HsvSplitParams
    from src.stages import hsv_split

    start = time.perf_counter()
    hsv_split.run(HsvSplitParams(image_size=image_size), raw=photos, out=out / "hsv", report=out / "r.csv",
                  metrics=out / "m.json")
    return time.perf_counter() - start


def configure(repo: Path, photos: Path, image_size: int) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["download"].update(source="folder", folder=str(photos))
    params["hsv_split"].update(image_size=image_size, tile=0)
    params["shard"].update(val_ratio=0.1, test_ratio=0.1, shard_records=1024)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def tf_data_rate(repo: Path, batch: int = 64, seconds: float = 10.0, flip: bool = True) -> float:
    """Training-pipeline images/s (shuffle, flip, decode, split gray / H,S) from the shards in `repo`."""
    sys.path.insert(0, str(repo))
    from src.data.pipeline import InputSpec, dataset
    from src.data.shards import ShardSet

    shards = ShardSet.open(repo / "data" / "shards")
    ds = dataset(shards, "train", InputSpec(), batch, training=True, seed=0, flip=flip).repeat()
    it = iter(ds)
    for _ in range(5):
        next(it)  # warm-up: graph tracing and first reads
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += next(it)[0].shape[0]
    sys.path.remove(str(repo))
    return n / (time.perf_counter() - start)


def tfrecord_rate(repo: Path, batch: int = 64, seconds: float = 10.0) -> float:
    """The same records as TFRecord (one tf.train.Example each), with the same per-record work minus flips."""
    import tensorflow as tf

    records = np.load(next((repo / "data" / "shards").glob("train-*.npy")))
    path = repo / "data" / "train.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            feature = {"record": tf.train.Feature(bytes_list=tf.train.BytesList(value=[r.tobytes()]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    spec = {"record": tf.io.FixedLenFeature([], tf.string)}
    shape = records.shape[1:]
    def decode(example):
        record = tf.reshape(tf.io.decode_raw(tf.io.parse_single_example(example, spec)["record"], tf.uint8), shape)
        return record[..., 3:4], record[..., :2]

    ds = (tf.data.TFRecordDataset([str(path)], num_parallel_reads=tf.data.AUTOTUNE).repeat().shuffle(1000)
          .map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
    it = iter(ds)
    for _ in range(5):
        next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += next(it)[0].shape[0]
    return n / (time.perf_counter() - start)


def multiply(photos: Path, dest: Path, times: int) -> Path:
    """`times` copies of every photo under new names: 10x the data for the memory check."""
    dest.mkdir(parents=True)
    for k in range(times):
        for f in photos.iterdir():
            os.link(f, dest / f"{k:02d}-{f.name}") if f.stat().st_dev == dest.stat().st_dev else shutil.copy(f, dest / f"{k:02d}-{f.name}")
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of colour photos")
    args = parser.parse_args()
    if not args.photos.is_dir():
        sys.exit(f"{args.photos} not found: pass --photos with a folder of photos")
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    results: dict = {"photos": str(args.photos), "cores": os.cpu_count()}
    try:
        repo = copy_repo(work / "repo")
        configure(repo, args.photos, 64)
        files = sorted(str(f) for f in args.photos.iterdir())
        results["download_s"], results["download_peak_mib"] = stage("download", repo)
        results["hsv_split_stage_s"], results["hsv_split_peak_mib_1x"] = stage("hsv_split", repo)
        bare_s, split_s = [], []
        for _ in range(3):  # interleaved repeats; the best of each is least disturbed by noise
            bare_s.append(bare_loop(files, os.cpu_count() or 1))
            split_s.append(hsv_split_loop(args.photos, work / "inproc"))
        results.update(hsv_split_img_s=len(files) / min(split_s), bare_loop_img_s=len(files) / min(bare_s),
                       hsv_split_vs_bare=min(bare_s) / min(split_s))
        results["shard_s"], results["shard_peak_mib_1x"] = stage("shard", repo)
        results["tf_data_img_s_64px"] = tf_data_rate(repo)

        configure(repo, args.photos, 224)
        stage("hsv_split", repo)
        stage("shard", repo)
        results["tf_data_img_s_224px"] = tf_data_rate(repo)
        results["npy_no_flip_img_s_224px"] = tf_data_rate(repo, flip=False)
        results["tfrecord_no_flip_img_s_224px"] = tfrecord_rate(repo)

        big = multiply(args.photos, work / "photos10x", 10)
        configure(repo, big, 64)
        results["download_peak_mib_10x"] = stage("download", repo)[1]
        results["hsv_split_s_10x"], results["hsv_split_peak_mib_10x"] = stage("hsv_split", repo)
        results["shard_s_10x"], results["shard_peak_mib_10x"] = stage("shard", repo)

        fresh = copy_repo(work / "repro")
        dvc("repro", "shard", cwd=fresh)
        start = time.perf_counter()
        dvc("repro", "shard", cwd=fresh)
        results["no_change_repro_s"] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = save("data_pipeline", results)
    width = max(map(len, results))
    for k, v in results.items():
        print(f"{k:<{width}}  {v:.2f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
