"""The shard format: plain .npy files of uint8 records (n, size, size, 4), channels H, S, V, Y.

Chosen because numpy reads a shard with np.load(mmap_mode="r") and tf.data streams the same bytes as fixed-length
records (FixedLengthRecordDataset with the .npy header skipped) with parallel reads and no parsing; see docs/benchmarks.md.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.core.files import sha256_file

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


class CorruptShard(ValueError):
    pass


def split_of(photo: str, salt: str, val_ratio: float, test_ratio: float) -> str:
    """Stable split of one source photo: depends only on its own hash, so adding photos never moves others."""
    u = int.from_bytes(hashlib.sha256(f"{salt}:{photo}".encode()).digest()[:8], "big") / 2**64
    if u < test_ratio:
        return "test"
    if u < test_ratio + val_ratio:
        return "val"
    return "train"


def order_key(salt: str, photo: str, tile: int) -> str:
    """Seeded, stable order of records inside a split (mixes photos across shards)."""
    return hashlib.sha256(f"{salt}:order:{photo}:{tile}".encode()).hexdigest()


def source_folder(names: pd.Series) -> pd.Series:
    """The training folder of each record name (data/raw/<folder>/..., "." for files at its top)."""
    return names.str.extract(r"^([^/]+)/", expand=False).fillna(".")


def header_bytes(path: Path) -> int:
    """Length of the .npy header: the offset of the first record."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read_header(f)
        return f.tell()


@dataclass(frozen=True)
class ShardSet:
    """A shard folder as described by its manifest."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: Path | str, verify: bool = True) -> "ShardSet":
        """The shard set at `root`; every shard's SHA-256 is checked against the manifest unless `verify` is off."""
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run the shard stage first (dvc repro shard)")
        shards = cls(root, json.loads(path.read_text()))
        if verify:
            shards.verify()
        return shards

    def verify(self) -> None:
        """Raise CorruptShard naming the first shard whose bytes are not the ones the manifest recorded."""
        for split in self.manifest["splits"]:
            for entry in self.manifest["splits"][split]["shards"]:
                path = self.root / entry["file"]
                if not path.exists():
                    raise CorruptShard(f"{path}: missing; restore it with `dvc checkout` or `dvc repro shard`")
                if sha256_file(path) != entry["sha256"]:
                    raise CorruptShard(f"{path}: SHA-256 differs from {MANIFEST} (corrupted or edited); "
                                       "restore it with `dvc checkout` or `dvc repro -f shard`")

    @property
    def record_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["record_shape"])  # type: ignore[return-value]

    @property
    def image_size(self) -> int:
        return self.record_shape[0]

    def count(self, split: str) -> int:
        return self.manifest["splits"][split]["records"]

    def records(self, split: str) -> pd.DataFrame:
        """records.csv's rows of a split (file, photo, tile), in the shards' record order."""
        return pd.read_csv(self.root / "records.csv").query("split == @split")

    def files(self, split: str) -> list[Path]:
        return [self.root / s["file"] for s in self.manifest["splits"][split]["shards"]]

    def headers(self, split: str) -> list[int]:
        return [s["header_bytes"] for s in self.manifest["splits"][split]["shards"]]

    def load(self, split: str, limit: int = 0) -> np.ndarray:
        """The records of a split (the first `limit` if set) as one uint8 array: memory-mapped shards, and only
        the shards that `limit` reaches are copied, so a sample costs the same memory whatever the split's size."""
        parts, wanted = [], limit or self.count(split)
        for f in self.files(split):
            if wanted <= 0:
                break
            part = np.load(f, mmap_mode="r")[:wanted]
            parts.append(part)
            wanted -= len(part)
        return np.concatenate(parts) if parts else np.zeros((0, *self.record_shape), np.uint8)

    def batches(self, split: str, size: int) -> Iterator[np.ndarray]:
        """The records of a split in order, `size` at a time (fewer at a shard's end), copied from memory-mapped
        shards one batch at a time: reading a whole split this way costs one batch of memory."""
        for f in self.files(split):
            shard = np.load(f, mmap_mode="r")
            for start in range(0, len(shard), size):
                yield np.array(shard[start : start + size])
