"""Stage `shard`: split records into train/val/test by source photo and write fixed-size .npy shards.

    python -m src.stages.shard            # uses params.yaml: shard.*

Each photo's split comes from a salted hash of its content, so adding photos never moves old ones and every tile
of a photo stays in one split. data/shards/manifest.json lists counts, shapes and SHA-256 of every shard.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.core.entry import stage_main
from src.core.files import atomic_path, sha256_file, write_json
from src.core.params import ShardParams
from src.core.paths import HSV_DIR, SHARD_DIR
from src.data.shards import MANIFEST, SPLITS, header_bytes, order_key, split_of

log = logging.getLogger(__name__)


def assign_splits(index: pd.DataFrame, p: ShardParams) -> pd.DataFrame:
    """records.csv rows + a `split` column, ordered within each split by a seeded stable key."""
    if not 0 <= p.val_ratio < 1 or not 0 <= p.test_ratio < 1 or p.val_ratio + p.test_ratio >= 1:
        raise ValueError(f"shard ratios must leave room for training: val {p.val_ratio}, test {p.test_ratio}")
    photos = index["photo"].astype(str)
    index = index.assign(
        photo=photos,
        split=[split_of(ph, p.salt, p.val_ratio, p.test_ratio) for ph in photos],
        key=[order_key(p.salt, ph, t) for ph, t in zip(photos, index["tile"])],
    )
    return index.sort_values(["split", "key"], kind="stable").reset_index(drop=True)


class PartReader:
    """Reads single records from hsv-split's .npy parts with pread.

    Not np.memmap: random access over memory-mapped parts maps in (and counts as resident) nearly every page of
    every part, so memory would grow with the data set.
    """

    def __init__(self, hsv: Path):
        self.hsv = hsv
        self.files: dict[int, tuple[int, int, tuple[int, ...]]] = {}  # part -> (fd, header bytes, record shape)

    def read(self, part: int, offset: int) -> np.ndarray:
        if part not in self.files:
            path = self.hsv / f"part-{part:05d}.npy"
            shape = np.load(path, mmap_mode="r").shape[1:]
            self.files[part] = (os.open(path, os.O_RDONLY), header_bytes(path), shape)
        fd, header, shape = self.files[part]
        size = int(np.prod(shape))
        data = os.pread(fd, size, header + offset * size)
        return np.frombuffer(data, np.uint8).reshape(shape)

    def close(self) -> None:
        for fd, _, _ in self.files.values():
            os.close(fd)
        self.files.clear()


def run(p: ShardParams, hsv: Path = HSV_DIR, out: Path = SHARD_DIR) -> dict:
    """Write the shards and the manifest; returns the manifest."""
    if p.shard_records < 1:
        raise ValueError("shard.shard_records must be at least 1")
    index = assign_splits(pd.read_csv(hsv / "records.csv", dtype={"photo": str}), p)
    reader = PartReader(hsv)
    first = reader.read(int(index["part"].iloc[0]), int(index["offset"].iloc[0]))
    manifest: dict = {"format": "npy", "dtype": "uint8", "record_shape": list(first.shape),
                      "channels": ["H", "S", "V", "Y"], "params": vars(p), "splits": {}}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for split in SPLITS:
            rows = index[index["split"] == split]
            if rows.empty:
                raise RuntimeError(
                    f"split {split!r} is empty ({index['photo'].nunique()} photos, val_ratio {p.val_ratio}, "
                    f"test_ratio {p.test_ratio}): add photos, tile them (hsv_split.tile) or change shard.salt"
                )
            shards = []
            starts = range(0, len(rows), p.shard_records)
            for n, start in enumerate(tqdm(starts, desc=f"shard {split}", unit="shard")):
                chunk = rows.iloc[start : start + p.shard_records]
                name = f"{split}-{n:05d}.npy"
                np.save(tmp / name, np.stack([reader.read(int(r.part), int(r.offset)) for r in chunk.itertuples()]))
                shards.append({"file": name, "records": len(chunk), "sha256": sha256_file(tmp / name),
                               "header_bytes": header_bytes(tmp / name)})
            manifest["splits"][split] = {"records": len(rows), "photos": int(rows["photo"].nunique()),
                                         "shards": shards}
        rows_out = index[["file", "photo", "tile", "split"]]
        rows_out.to_csv(tmp / "records.csv", index=False)
        write_json(tmp / MANIFEST, manifest)
    reader.close()
    log.info("shards: %s", {s: (m["records"], m["photos"]) for s, m in manifest["splits"].items()})
    return manifest


def main() -> None:
    stage_main(__doc__, "shard", run)


if __name__ == "__main__":
    main()
