"""Input pipelines from shards: tf.data for training (TF only here), plain numpy for evaluation and other backends.

Both yield (gray, hsv) as uint8: gray (n, s, s, 1) is the model input (luma or V), hsv (n, s, s, 3) the OpenCV
H, S, V that the loss encodes (src/data/colour.py, src/model/losses.py). Moving bytes instead of float32 keeps the CPU side 4x lighter
and lets the encoding run on the accelerator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from src.core.params import ModelParams
from src.data import colour, hints
from src.data.shards import ShardSet, source_folder

# Shards are written in a seeded order mixing photos, and training interleaves 8 of them, so a shuffle buffer of
# 256 MiB (1,337 records at 224 px; every record of the 64 px default) mixes well at any data size.
SHUFFLE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class InputSpec:
    gray: colour.Gray = "luma"
    target: colour.Target = "chroma"
    temperature: float = 1.0  # bins target: annealed-mean temperature of predictions
    boost: float = 0.0  # bins target: colour boost of predictions (colour.annealed_mean)
    hints: bool = False  # the model also takes a hint map (src/data/hints.py)

    @classmethod
    def of(cls, p: ModelParams) -> InputSpec:
        """What a model of these params takes and how its outputs are decoded."""
        return cls(p.gray, p.target, p.temperature, p.colour_boost, p.hints)


def arrays(records: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """uint8 records (n, s, s, 4) -> (gray, hsv) uint8 numpy arrays."""
    return colour.gray_input(records, spec.gray), colour.truth_channels(records)


def folder_shares(shards: ShardSet, split: str, balance: float) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw each folder (data/raw/<folder>/...) in proportion to its records ** `balance`: (per folder: records,
    keep probability and share drawn; the keep probability of each record of the split, in shard order).

    1 keeps every record; 0 thins each folder to the smallest one's size, so every folder is drawn as often.
    """
    if not 0 <= balance <= 1:
        raise ValueError(f"train.folder_balance must be in [0, 1], got {balance}")
    folder = source_folder(shards.records(split)["file"])
    counts = folder.value_counts().rename_axis("folder")
    keep = (counts / counts.min()) ** (balance - 1)  # drawn: counts * keep, proportional to counts ** balance
    table = pd.DataFrame({"records": counts, "keep": keep.round(4),
                          "share": (counts * keep / (counts * keep).sum()).round(4)})
    return table, folder.map(keep).to_numpy(np.float32)


def dataset(
    shards: ShardSet,
    split: str,
    spec: InputSpec,
    batch_size: int,
    *,
    training: bool = False,
    seed: int = 0,
    flip: bool = False,
    crop: int = 0,
    scale: tuple[float, float] = (1.0, 1.0),
    limit: int = 0,
    hint_none_share: float = 1.0,
    hint_points: float = hints.MEAN_POINTS,
    keep: np.ndarray | None = None,
):
    """tf.data pipeline over one split: parallel reads, seeded shuffle and augmentation when training.

    A hint model's input is {"gray", "hints"}: hints drawn from the truth (src/data/hints.py), none for
    `hint_none_share` of the records (1: none at all), `hint_points` on average on the others, keyed by record
    position and seed like the augmentation, so validation draws the same hints every epoch. Augmentation uses
    stateless random ops keyed by (record position, seed), so runs are repeatable. `scale` (lo, hi): each training
    record is first resized by a random factor in that range (never below `crop`), so the model sees objects at more
    sizes than the few photos hold; it needs `crop` to give batches one shape. `keep` (training): each record's
    probability of being drawn, in the split's order (folder_shares): a seeded coin per stream position.
    """
    import tensorflow as tf

    size = shards.image_size
    rescale = training and tuple(scale) != (1.0, 1.0)
    if rescale and not crop:
        raise ValueError(f"train.scale {tuple(scale)} needs train.crop: rescaled records differ in size")
    if rescale and not 0 < scale[0] <= scale[1]:
        raise ValueError(f"train.scale must be (lo, hi) with 0 < lo <= hi, got {tuple(scale)}")
    record_bytes = int(np.prod(shards.record_shape))
    files = [str(f) for f in shards.files(split)]
    ds = tf.data.Dataset.from_tensor_slices((files, np.array(shards.headers(split), np.int64)))
    thinned = training and keep is not None and bool((keep < 1).any())
    if thinned:  # each record travels with its keep probability: the shards mix folders
        lengths = [s["records"] for s in shards.manifest["splits"][split]["shards"]]
        per_file = tf.RaggedTensor.from_row_lengths(keep.astype(np.float32), lengths)
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.range(len(files)))
        ds = ds.map(lambda fh, i: (*fh, per_file[i]))

    def read(f, h, k=None):
        records = tf.data.FixedLengthRecordDataset(f, record_bytes, header_bytes=h)
        return records if k is None else tf.data.Dataset.zip(records, tf.data.Dataset.from_tensor_slices(k))

    ds = ds.interleave(
        read,
        cycle_length=min(len(files), 8) if training else 1,  # evaluation keeps the shards' record order
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if limit:
        ds = ds.take(limit)
    if training:  # the buffer holds raw records: bounded in bytes, so memory does not grow with the photos
        buffer = min(shards.count(split), max(SHUFFLE_BYTES // record_bytes, 256))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    # Per-record work parallelises across cores and is ~2x faster here than batch-wide tf.where flips and slices.
    def decode(index, raw):
        record = tf.reshape(tf.io.decode_raw(raw, tf.uint8), [size, size, 4])
        if training and flip:
            record = tf.image.stateless_random_flip_left_right(record, seed=tf.stack([index, seed]))
        if rescale:
            record = resized(record, tf.random.stateless_uniform([], tf.stack([index, seed + 2]), scale[0], scale[1]))
        if training and crop:
            record = tf.image.stateless_random_crop(record, [crop, crop, 4], seed=tf.stack([index, seed + 1]))
        gray = colour.gray_input(record, spec.gray)
        if spec.hints:
            given = (hints.simulated(record, tf.stack([index, seed + 3]), spec.target, hint_none_share, hint_points)
                     if hint_none_share < 1 else tf.zeros(tf.concat([tf.shape(record)[:2], [hints.CHANNELS]], 0)))
            gray = {"gray": gray, "hints": given}
        return gray, colour.truth_channels(record)

    def resized(record, factor):
        side = tf.maximum(tf.cast(tf.round(size * factor), tf.int32), crop)
        # hue is circular: interpolating 178 and 2 gives 90, so it takes its nearest neighbour's value
        hue = tf.image.resize(record[..., :1], [side, side], method="nearest")
        rest = tf.image.resize(record[..., 1:], [side, side], method="bilinear", antialias=True)
        return tf.concat([hue, tf.cast(tf.clip_by_value(tf.round(rest), 0, 255), tf.uint8)], axis=-1)

    ds = ds.enumerate()
    if thinned:  # a stateless coin per stream position: repeatable like the augmentation
        ds = ds.filter(lambda i, rk: tf.random.stateless_uniform([], tf.stack([i, seed + 4])) < rk[1])
        ds = ds.map(lambda i, rk: (i, rk[0]))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
