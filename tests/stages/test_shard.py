"""Shards: stable photo-level splits, fixed-size .npy files, manifest checksums, numpy == tf.data."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from src.core.params import ShardParams
from src.data.pipeline import InputSpec, arrays, dataset, folder_shares
from src.data.shards import CorruptShard, ShardSet, split_of
from tests.conftest import build_shards, photo


def build(raw: Path, tmp: Path, shard_params: ShardParams) -> ShardSet:
    return build_shards(raw, tmp, shard_params)


def photo_splits(shards: ShardSet) -> dict[str, str]:
    table = pd.read_csv(shards.root / "records.csv")
    per_photo = table.groupby("file")["split"].agg(set)
    assert (per_photo.map(len) == 1).all(), "every tile of a photo must stay in one split"
    return per_photo.map(lambda s: next(iter(s))).to_dict()


@pytest.fixture
def many_photos(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(30):
        cv2.imwrite(str(raw / f"p{i:02d}.png"), photo((80, 120), seed=i))
    return raw


def test_adding_photos_never_moves_old_ones(many_photos, tmp_path):
    p = ShardParams(val_ratio=0.2, test_ratio=0.2, shard_records=7)
    before = photo_splits(build(many_photos, tmp_path / "a", p))
    for i in range(30, 45):
        cv2.imwrite(str(many_photos / f"p{i:02d}.png"), photo((80, 120), seed=i))
    after = photo_splits(build(many_photos, tmp_path / "b", p))
    assert len(after) == 45
    assert {f: after[f] for f in before} == before
    assert set(after.values()) == {"train", "val", "test"}


def test_shards_are_fixed_size_and_complete(many_photos, tmp_path):
    shards = build(many_photos, tmp_path, ShardParams(val_ratio=0.2, test_ratio=0.2, shard_records=7))
    total = 0
    for split, meta in shards.manifest["splits"].items():
        counts = [s["records"] for s in meta["shards"]]
        assert all(c == 7 for c in counts[:-1]) and 0 < counts[-1] <= 7
        for s in meta["shards"]:
            assert np.load(shards.root / s["file"], mmap_mode="r").shape == (s["records"], 32, 32, 4)
        total += meta["records"]
    assert total == 30 * 2 * 3  # 80x120 photos cut into 40 px tiles: 2 x 3 each


def test_a_flipped_byte_in_a_shard_is_reported_with_its_name_when_opened(many_photos, tmp_path):
    shards = build(many_photos, tmp_path, ShardParams(val_ratio=0.2, test_ratio=0.2, shard_records=7))
    victim = shards.files("val")[1]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01  # one bit of one pixel: still a valid .npy file
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptShard, match=rf"{victim.name}: SHA-256 differs"):
        ShardSet.open(shards.root)
    victim.unlink()
    with pytest.raises(CorruptShard, match=rf"{victim.name}: missing"):
        ShardSet.open(shards.root)


def test_tf_data_and_numpy_read_the_same_records(many_photos, tmp_path):
    shards = build(many_photos, tmp_path, ShardParams(shard_records=5))
    spec = InputSpec(gray="luma", target="chroma")
    gray, target = arrays(shards.load("train"), spec)
    batches = list(dataset(shards, "train", spec, batch_size=8).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), gray)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), target)
    assert gray.dtype == target.dtype == np.uint8 and target.shape[-1] == 3  # H, S, V


def test_training_pipeline_is_seeded(many_photos, tmp_path):
    shards = build(many_photos, tmp_path, ShardParams(shard_records=5))
    spec = InputSpec()

    def first_epoch(seed: int) -> np.ndarray:
        ds = dataset(shards, "train", spec, 8, training=True, seed=seed, flip=True, crop=24)
        return np.concatenate([hsv for _, hsv in ds.as_numpy_iterator()])

    a, b, c = first_epoch(1), first_epoch(1), first_epoch(2)
    assert a.shape[1:] == (24, 24, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_ratios_are_respected_on_many_photos():
    splits = pd.Series([split_of(f"photo-{i}", "salt", 0.1, 0.2) for i in range(20_000)]).value_counts(normalize=True)
    assert splits["test"] == pytest.approx(0.2, abs=0.01)
    assert splits["val"] == pytest.approx(0.1, abs=0.01)


def test_an_empty_split_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    cv2.imwrite(str(raw / "only.png"), photo(seed=1))
    with pytest.raises(RuntimeError, match="is empty"):
        build(raw, tmp_path, ShardParams())


def test_rescaled_training_records_keep_hue_circular(tmp_path):
    # 1 px stripes of hue 2 (orange-red) and 178 (crimson): interpolating hue as a number would give ~90 (cyan)
    hsv = np.zeros((64, 64, 3), np.uint8)
    hsv[..., 0] = np.where(np.arange(64) % 2, 2, 178)[None, :]
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(12):  # each photo a little brighter: identical files would count as one photo
        hsv[..., 1:] = 160 + 5 * i
        cv2.imwrite(str(raw / f"p{i:02d}.png"), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    shards = build_shards(raw, tmp_path, tile=0, image_size=64)

    def epoch(scale) -> np.ndarray:
        ds = dataset(shards, "train", InputSpec(), 4, training=True, seed=3, crop=40, scale=scale)
        return np.concatenate([hsv for _, hsv in ds.as_numpy_iterator()])

    plain, rescaled = epoch((1.0, 1.0)), epoch((0.7, 1.5))
    assert rescaled.shape == plain.shape and rescaled.shape[1:] == (40, 40, 3)
    hue = rescaled[..., 0].astype(int)
    assert np.minimum(hue, 180 - hue).max() <= 3  # every pixel still red, none cyan
    assert not np.array_equal(rescaled, plain)
    np.testing.assert_array_equal(rescaled, epoch((0.7, 1.5)))  # seeded


def test_rescaling_without_a_crop_is_a_clear_error(many_photos, tmp_path):
    shards = build(many_photos, tmp_path, ShardParams())
    with pytest.raises(ValueError, match="needs train.crop"):
        dataset(shards, "train", InputSpec(), 4, training=True, scale=(0.8, 1.2))


def test_a_sample_of_a_split_reads_only_the_shards_it_reaches(many_photos, tmp_path):
    """train.py's sample grid and fit.py's class prior take a few records: at 15,000 photos, copying the whole
    split first cost gigabytes. The shards past the sample are not even opened, so removing them changes nothing."""
    shards = build(many_photos, tmp_path, ShardParams(val_ratio=0.2, test_ratio=0.2, shard_records=5))
    whole = shards.load("train")
    assert len(shards.files("train")) >= 3
    for later in shards.files("train")[2:]:
        later.unlink()
    np.testing.assert_array_equal(shards.load("train", limit=7), whole[:7])
    np.testing.assert_array_equal(shards.load("train", limit=10), whole[:10])


def test_a_split_read_in_batches_is_the_whole_split_in_order_one_small_copy_at_a_time(many_photos, tmp_path):
    """evaluate and calibrate read their split this way, so their memory does not grow with it."""
    shards = build(many_photos, tmp_path, ShardParams(val_ratio=0.2, test_ratio=0.2, shard_records=5))
    batches = list(shards.batches("train", 3))
    assert all(len(b) <= 3 and isinstance(b, np.ndarray) and not isinstance(b, np.memmap) for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), shards.load("train"))


def test_folder_balance_draws_a_small_folder_as_often_as_a_large_one(tmp_path):
    raw = tmp_path / "raw"
    for folder, count, hue in (("large", 400, 0), ("small", 50, 120)):  # red and blue photos
        (raw / folder).mkdir(parents=True)
        for i in range(count):  # no two alike: identical files would count as one photo
            hsv = np.full((40, 40, 3), (hue, 100 + i // 100, 40 + i % 100), np.uint8)
            cv2.imwrite(str(raw / folder / f"p{i:02d}.png"), cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR))
    shards = build_shards(raw, tmp_path, ShardParams(val_ratio=0.1, test_ratio=0.1, shard_records=7), tile=0, image_size=8)
    large, small = (pd.read_csv(shards.root / "records.csv").query("split == 'train'")["file"]
                    .str.startswith(f).sum() for f in ("large/", "small/"))

    def blue_share(balance: float) -> float:
        table, keep = folder_shares(shards, "train", balance)
        assert table["records"].to_dict() == {"large": large, "small": small}
        ds = dataset(shards, "train", InputSpec(), 8, training=True, seed=5, keep=keep).repeat(20)
        hues = np.concatenate([hsv[:, 0, 0, 0] for _, hsv in ds.as_numpy_iterator()])
        return float(np.mean(hues > 60))

    assert blue_share(1.0) == pytest.approx(small / (large + small), abs=0.02)  # every record: as they come
    # a seeded coin per stream position: over ~350 positions the kept share is within a few points of its goal
    assert blue_share(0.0) == pytest.approx(0.5, abs=0.07)  # the large folder thinned to the small one's size
    assert blue_share(0.5) == pytest.approx(small**0.5 / (large**0.5 + small**0.5), abs=0.05)
    with pytest.raises(ValueError, match="folder_balance"):
        folder_shares(shards, "train", 1.5)
