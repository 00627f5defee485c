import cv2
import numpy as np
import pytest

from src.data import colour
from tests.conftest import photo


def bgr(*pixel: int) -> np.ndarray:
    return np.array([[pixel]], dtype=np.uint8)


@pytest.mark.parametrize(
    "pixel",
    [(0, 0, 0), (255, 255, 255), (128, 128, 128), (0, 0, 255), (10, 0, 255), (0, 10, 255), (255, 0, 0), (0, 255, 0)],
    ids=["black", "white", "gray", "red", "red-hue-wraps-179", "red-hue-near-0", "blue", "green"],
)
def test_record_round_trip(pixel):
    image = bgr(*pixel)
    record = colour.bgr_to_record(image)
    assert record[..., colour.H].max() < colour.HUE_RANGE
    np.testing.assert_allclose(colour.record_to_bgr(record), image, atol=2)
    assert record[0, 0, colour.Y] == cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[0, 0]


@pytest.mark.parametrize("target", ["hs", "chroma"])
def test_encode_decode_round_trip(target):
    hue = np.array([0, 1, 45, 90, 178, 179], np.float32)
    sat = np.array([255, 200, 100, 50, 255, 30], np.float32)
    h2, s2 = colour.decode_target(colour.encode_target(hue, sat, target), target)
    np.testing.assert_allclose(colour.record_target(np.stack([hue, sat], -1).astype(np.uint8), target),
                               colour.encode_target(hue, sat, target), atol=1e-6)
    circular = np.minimum(np.abs(h2 - hue), colour.HUE_RANGE - np.abs(h2 - hue))
    assert circular.max() < 1e-3
    np.testing.assert_allclose(s2, sat, atol=1e-3)


def test_cbcr_target_renders_back_to_the_photo_and_tracks_rgb_error():
    image = photo(seed=4)
    record = colour.bgr_to_record(image)
    encoded = colour.record_target(record, "cbcr")
    np.testing.assert_allclose(encoded, cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)[..., 1:] / 255.0 - 0.5, atol=0.02)
    out = colour.render_prediction(record[..., colour.Y], encoded, "cbcr")
    assert np.abs(out.astype(int) - image).mean() < 2
    gray = colour.render_prediction(record[..., colour.Y], np.zeros_like(encoded), "cbcr")
    np.testing.assert_array_equal(gray, np.repeat(record[..., colour.Y : colour.Y + 1], 3, axis=-1))
    # a dark and a bright pixel of the same hue and S: chroma weighs both alike, cbcr (like RGB) the bright one more
    dark, bright = colour.record_target(np.array([[0, 255, 40], [0, 255, 240]], np.uint8), "cbcr")
    assert np.linalg.norm(bright) > 5 * np.linalg.norm(dark)
    with pytest.raises(ValueError, match="V channel"):
        colour.record_target(np.array([[0, 255]], np.uint8), "cbcr")


def test_bins_cover_the_chroma_disk_and_their_annealed_mean_recovers_the_colour():
    centres = colour.chroma_bins()
    assert len(centres) > 60 and np.hypot(*centres.T).max() < 1.0 + colour.BIN_STEP
    chroma = colour.record_target(np.array([[20, 255], [70, 128], [130, 200]], np.uint8), "bins")  # off bin edges
    labels = colour.bin_labels(chroma)
    np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-5)
    nearest = np.argmin(((chroma[:, None] - centres) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(labels.argmax(-1), nearest)
    scores = np.log(labels + 1e-12)  # a model that predicts the soft labels exactly
    mean = colour.annealed_mean(scores, 1.0)
    assert np.abs(mean - chroma).max() < 0.12
    mode = colour.annealed_mean(scores, 0.01)
    np.testing.assert_allclose(mode, centres[nearest], atol=1e-4)
    # lower temperature: a two-way doubt between a colour and gray keeps more of the colour
    doubt = np.log(0.5 * colour.bin_labels(chroma[:1]) + 0.5 * colour.bin_labels(np.zeros((1, 2), np.float32)))
    assert np.hypot(*colour.annealed_mean(doubt, 0.38)[0]) > np.hypot(*colour.annealed_mean(doubt, 1.0)[0])
    # boost rebalances towards colourful classes: the mean of the same doubt moves away from gray
    assert np.hypot(*colour.annealed_mean(doubt, 1.0, boost=16.0)[0]) > np.hypot(*colour.annealed_mean(doubt, 1.0)[0])


def test_cbcr_bins_tile_the_reachable_cbcr_plane_and_their_mean_renders_the_photo_s_colours():
    centres, step = colour.chroma_bins("cbcr_bins"), colour.BIN_STEPS["cbcr_bins"]
    rgb = np.random.default_rng(0).integers(0, 256, (4096, 1, 3), dtype=np.uint8)
    crcb = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2YCrCb)[:, 0, 1:] - 0.5
    nearest = np.sqrt(((crcb[:, None] - centres) ** 2).sum(-1)).min(axis=1)
    assert nearest.max() <= step / np.sqrt(2) + 1e-6  # every colour lies in some bin's cell
    reach = np.sqrt(((centres[:, None] - crcb) ** 2).sum(-1)).min(axis=1)
    assert reach.max() < step  # and every bin holds colours (no classes outside the gamut)
    assert 60 < len(centres) < 100
    # soft labels as wide, in steps, as the HSV bins': an interior centre keeps the same share of its own label
    own = colour.bin_labels(np.float32([[0.05, 0.05]]), target="cbcr_bins").max()
    assert own == pytest.approx(colour.bin_labels(np.float32([[0.1, 0.1]])).max(), rel=1e-4)
    # a model that predicts a photo's soft labels exactly colours it back: the path from records to rendering
    image = photo((32, 32), seed=3)
    records = colour.bgr_to_record(image)
    chroma = colour.record_target(records, "cbcr_bins")
    np.testing.assert_allclose(chroma, crcb_of(image), atol=0.01)
    mean = colour.annealed_mean(np.log(colour.bin_labels(chroma, target="cbcr_bins") + 1e-12), target="cbcr_bins")
    rendered = colour.render_prediction(records[..., colour.Y], mean, "cbcr_bins")
    err = np.abs(rendered.astype(int) - image.astype(int))
    gray_err = np.abs(np.repeat(records[..., colour.Y:], 3, -1).astype(int) - image.astype(int))
    assert err.mean() < 0.15 * gray_err.mean() and np.percentile(err, 99) <= 12


def crcb_of(bgr_image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr_image.astype(np.float32) / 255.0, cv2.COLOR_BGR2YCrCb)[..., 1:] - 0.5


def test_chroma_is_circular_and_ignores_hue_without_saturation():
    near_0, near_179, cyan = colour.encode_target(np.array([1.0, 178.0, 90.0]), np.full(3, 255.0))
    assert np.linalg.norm(near_0 - near_179) < 0.11  # 3 steps (6 degrees) apart, both red
    assert np.linalg.norm(near_0 - cyan) > 1.9  # opposite hues are far apart
    gray_a, gray_b = colour.encode_target(np.array([0.0, 90.0]), np.array([0.0, 0.0]))
    np.testing.assert_array_equal(gray_a, gray_b)  # hue is meaningless at S = 0


def test_render_keeps_luma_and_reproduces_the_photo():
    image = photo(seed=3)
    record = colour.bgr_to_record(image)
    out = colour.render(record[..., colour.Y], record[..., colour.H].astype(np.float32), record[..., colour.S].astype(np.float32))
    assert np.abs(colour.luma(out).astype(int) - record[..., colour.Y]).mean() < 1.5
    assert np.abs(out.astype(int) - image).mean() < 4


def test_render_of_zero_saturation_is_the_gray_photo():
    y = np.array([[0, 60, 200, 255]], np.uint8)
    out = colour.render(y, np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(out, np.repeat(y[..., None], 3, axis=-1))


def test_gray_inputs_differ_luma_v():
    record = colour.bgr_to_record(bgr(0, 0, 255))  # pure red: V = 255, luma = 76
    assert colour.gray_input(record, "v")[0, 0, 0] == 255
    assert colour.gray_input(record, "luma")[0, 0, 0] == 76


def test_a_saturated_colour_on_a_bright_pixel_keeps_the_luma_and_its_hue():
    """Pure blue at luma 240 is impossible (pure blue peaks at luma 29): it is mixed with white, not clipped."""
    y = np.array([[240, 250, 120]], np.uint8)
    hue = np.full((1, 3), 120.0, np.float32)  # OpenCV blue
    out = colour.render(y, hue, np.full((1, 3), 255.0, np.float32))
    np.testing.assert_allclose(colour.luma(out[None])[0], y, atol=1)
    b, g, r = out[0].astype(int).T
    assert (b > g).all() and (b > r).all()  # still bluish
