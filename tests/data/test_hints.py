"""Colour hints: simulated from the truth in the training pipeline, parsed from users, taken by a hint model."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from src.data import colour, hints
from src.data.pipeline import InputSpec, dataset
from src.training import fit
from tests.stages.test_train import FAST

QUADRANTS_BGR = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 200, 200)]  # top left, top right, bottom left, right


def quadrants(side: int = 64) -> np.ndarray:
    """Four flat colours, none mirrored: a hint read from a transposed or shifted place gets another quadrant's."""
    bgr = np.zeros((side, side, 3), np.uint8)
    half = side // 2
    for (rows, cols), c in zip([(slice(0, half), slice(0, half)), (slice(0, half), slice(half, side)),
                                (slice(half, side), slice(0, half)), (slice(half, side), slice(half, side))],
                               QUADRANTS_BGR):
        bgr[rows, cols] = c
    return bgr


def test_simulated_hints_carry_the_true_colour_of_where_they_are(tmp_path):
    import tensorflow as tf

    record = colour.bgr_to_record(quadrants())
    truth = colour.record_target(record, "bins")
    counts, checked = [], 0
    for i in range(200):
        given = hints.simulated(tf.constant(record), tf.constant([i, 7], tf.int64), "bins", 0.5).numpy()
        mask = given[..., 2] > 0
        counts.append(_patches(mask))
        # a patch inside one quadrant is that quadrant's colour exactly; one across a border mixes its neighbours'
        inner = mask & _inside_quadrant(mask)
        np.testing.assert_allclose(given[inner, :2], truth[inner], atol=1e-5)
        checked += inner.sum()
        assert not given[~mask].any()
    assert checked > 1000
    counts = np.array(counts)
    assert 0.4 < np.mean(counts == 0) < 0.6  # half the photos have none
    assert 5 < counts[counts > 0].mean() < 10  # the others 1 + geometric (p = 1/8): mean 8, less where patches merge


def test_simulated_hints_are_as_many_as_train_hint_points_asks():
    import tensorflow as tf

    record = tf.constant(colour.bgr_to_record(quadrants()))
    for mean, (lo, hi) in ((1, (1, 1)), (3, (2.4, 3.6))):
        drawn = (hints.simulated(record, tf.constant([i, 7], tf.int64), "bins", 0.0, mean) for i in range(200))
        counts = [_patches(given.numpy()[..., 2] > 0) for given in drawn]
        assert lo <= np.mean(counts) <= hi, (mean, np.mean(counts))


def _inside_quadrant(mask: np.ndarray) -> np.ndarray:
    """Pixels that no patch crossing a border can reach: 9 px (two patch halves) from every border."""
    side = mask.shape[0]
    pos = np.arange(side)
    far = np.abs(pos - side // 2 + 0.5) > 2 * hints.MAX_HALF + 0.5
    return far[:, None] & far[None, :]


def _patches(mask: np.ndarray) -> int:
    import cv2

    return cv2.connectedComponents(mask.astype(np.uint8))[0] - 1


def test_the_training_pipeline_feeds_hints_and_validation_the_same_ones_every_epoch(tiny_shards):
    spec = InputSpec(target="bins", hints=True)
    x, hsv = next(iter(dataset(tiny_shards, "train", spec, 8, training=True, seed=1, crop=24, hint_none_share=0.5)))
    assert x["gray"].shape == (8, 24, 24, 1) and x["hints"].shape == (8, 24, 24, 3)
    hue, sat = np.moveaxis(hsv.numpy()[..., :2].astype(np.float32), -1, 0)
    given, truth = x["hints"].numpy(), colour.encode_target(hue, sat)
    mask = given[..., 2] > 0
    assert mask.any()
    # each hinted pixel's colour is its patch's mean: near the pixel's own truth far more often than a shuffled one's
    own = np.abs(given[mask][:, :2] - truth[mask]).mean()
    shuffled = np.abs(given[mask][:, :2] - np.roll(truth, 7, axis=(1, 2))[mask]).mean()
    assert own < 0.6 * shuffled
    x, _ = next(iter(dataset(tiny_shards, "val", spec, 8)))
    assert not x["hints"].numpy().any()  # by default none
    val = dataset(tiny_shards, "val", spec, 8, hint_none_share=0.0)
    first, again = (next(iter(val))[0]["hints"].numpy() for _ in range(2))
    assert (first[..., 2].reshape(8, -1).max(axis=1) > 0).all() and np.array_equal(first, again)


def test_a_hint_model_trains_and_follows_a_hint(tiny_shards, tmp_path):
    from src.model.predict import Colorizer

    p = replace(FAST, model=replace(FAST.model, target="bins", hints=True), loss="ce", epochs=2)
    fit.configure(p)
    result = fit.fit(p, tiny_shards, tmp_path, verbose=0)
    assert result.history["val_rmse"].notna().all()
    colorizer = Colorizer(result.model, InputSpec(target="bins", hints=True), tiny_shards.image_size)
    gray = np.full((64, 64), 128, np.uint8)
    auto = colorizer.colorize([gray])[0]
    assert colorizer.colorize([gray], given=[[]])[0].tobytes() == auto.tobytes()
    hinted = colorizer.colorize([gray], given=[[hints.Hint(32, 32, hints.colour_of("#2040ff", "bins"))]])[0]
    assert not np.array_equal(hinted, auto)
    with pytest.raises(ValueError, match="takes no hints"):
        Colorizer(result.model, InputSpec(target="bins"), 32).inputs(
            np.zeros((1, 32, 32, 1), np.uint8), np.ones((1, 32, 32, 3), np.float32))


def test_hint_map_places_each_hint_at_its_scaled_point():
    given = [hints.Hint(150.0, 20.0, (0.5, -0.25))]  # a 300 x 200 (w x h) photo, model at 32 px
    out = hints.hint_map(given, (200, 300), 32)
    ys, xs = np.nonzero(out[..., 2])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (1, 5, 14, 18)  # (16, 3) +- HALF
    np.testing.assert_allclose(out[3, 16, :2], (0.5, -0.25))


@pytest.mark.parametrize("raw, message", [
    ('[{"x": 10, "y": 10, "colour": "#12345"}]', "hint 1: colour must be RGB hex"),
    ('[{"x": 10, "y": 99, "colour": "#123456"}]', r"hint 1: \(10, 99\) is outside the 64x48 photo"),
    ('[{"x": 1, "y": 1, "colour": "#123456"}, {"x": -1, "y": 1, "colour": "#123456"}]', "hint 2: .* outside"),
    ('[{"x": "a", "y": 1, "colour": "#123456"}]', "x and y must be numbers"),
    ('{"x": 1}', "must be a JSON list"),
    ('[{"x": 1, "y": 2}]', 'expected {"x"'),
    ("[1, 2", "not valid JSON"),
])
def test_bad_hints_get_a_clear_error(raw, message):
    with pytest.raises(ValueError, match=message):
        hints.parse(raw, 64, 48, "bins")


def test_parsed_hint_colours_are_their_chroma():
    (red,) = hints.parse('[{"x": 3, "y": 4, "color": "ff0000"}]', 64, 48, "bins")
    assert (red.x, red.y) == (3, 4)
    np.testing.assert_allclose(red.chroma, (1.0, 0.0), atol=1e-6)  # hue 0, full saturation


def test_the_naive_baseline_paints_only_around_each_hint():
    photo = np.full((40, 40, 3), 120, np.uint8)
    out = hints.paint(photo, [hints.Hint(10.5, 30.5, hints.colour_of("#ff0000", "bins"))], "bins", radius=3)
    changed = np.any(out != photo, axis=-1)
    ys, xs = np.nonzero(changed)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (27, 33, 7, 13)
    assert (out[30, 10, 2] > out[30, 10, 1]) and abs(int(colour.luma(out)[30, 10]) - 120) <= 1
