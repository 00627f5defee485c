"""Model builders and target-space losses."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from src.core.params import ModelParams
from src.data import colour
from src.model.losses import TargetLoss, TargetRMSE
from src.model.network import build_model


@pytest.mark.parametrize(
    "arch,encoder,decoders,gray,target",
    [("unet", "light", (64, 32, 16), "luma", "cbcr"), ("seed", "light", (64, 32, 16), "v", "hs"),
     ("seed", "light", (64, 32, 16), "luma", "chroma"), ("unet", "resnet50", (64, 32, 16, 16, 8), "v", "chroma"),
     ("unet", "lite0", (32, 32, 16, 16, 8), "luma", "hs")],
)
def test_every_arch_maps_uint8_gray_to_two_channels(arch, encoder, decoders, gray, target):
    """Each architecture once (the gray channel and the two-channel targets do not change the layers, but for
    seed's cap on hs)."""
    size = 64
    model = build_model(ModelParams(arch=arch, encoder=encoder, encoder_weights="none", decoder_widths=decoders,
                                    gray=gray, target=target), size)
    out = model.predict(np.zeros((2, size, size, 1), np.uint8), verbose=0)
    assert out.shape == (2, size, size, 2) and out.dtype == np.float32
    if arch == "seed" and target == "hs":
        assert 0.0 <= out.min() and out.max() <= 1.0  # capped like the original, at the true range


@pytest.mark.parametrize("target", ["bins", "cbcr_bins"])
def test_bins_target_scores_every_chroma_class_and_needs_the_unet(target):
    model = build_model(ModelParams(encoder="light", decoder_widths=(64, 32, 16), target=target), 32)
    classes = len(colour.chroma_bins(target))
    assert model.predict(np.zeros((1, 32, 32, 1), np.uint8), verbose=0).shape == (1, 32, 32, classes)
    with pytest.raises(ValueError, match="arch unet"):
        build_model(ModelParams(arch="seed", target=target), 64)


def test_cross_entropy_prefers_the_right_colour_and_goes_with_bins_only():
    hsv = np.array([[[[0, 255, 255], [60, 200, 128]]]], np.uint8)
    right = np.log(colour.bin_labels(colour.record_target(hsv, "bins")) + 1e-6)
    wrong = right[:, :, ::-1]
    loss = TargetLoss("bins", "ce")
    assert float(loss(hsv, right)) < float(loss(hsv, wrong))
    metric = TargetRMSE("bins")
    metric.update_state(hsv, right)
    assert float(metric.result()) < 0.1  # RMSE of the scores' mean chroma, comparable with the chroma target's
    with pytest.raises(ValueError, match="ce goes with target bins"):
        TargetLoss("chroma", "ce")
    with pytest.raises(ValueError, match="ce goes with target bins"):
        TargetLoss("bins", "mse")


def test_seed_reproduces_the_original_parameter_count():
    assert build_model(ModelParams(arch="seed"), 224).count_params() == 34_243_204


def test_decoder_widths_must_match_the_skips():
    with pytest.raises(ValueError, match="needs 3 entries"):
        build_model(ModelParams(encoder="light", decoder_widths=(32, 16)), 64)
    with pytest.raises(ValueError, match="needs 5 entries"):
        build_model(ModelParams(encoder="lite0", decoder_widths=(32, 16, 8)), 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        build_model(ModelParams(encoder="lite0"), 48)
    with pytest.raises(ValueError, match="divisible by 32"):
        build_model(ModelParams(arch="seed"), 48)


def test_loss_and_rmse_are_zero_for_the_encoded_truth_and_hue_is_circular():
    hsv = np.array([[[[1, 255, 200], [178, 255, 200], [90, 0, 90]]]], np.uint8)  # red, red across the wrap, gray
    exact = colour.record_target(hsv, "chroma")
    assert float(TargetLoss("chroma")(hsv, exact)) == pytest.approx(0.0, abs=1e-7)
    metric = TargetRMSE("chroma")
    metric.update_state(hsv, exact)
    assert float(metric.result()) == pytest.approx(0.0, abs=1e-6)
    swapped = exact[:, :, [1, 0, 2]]  # the two reds traded places: nearly free in chroma space
    assert float(TargetLoss("chroma")(hsv, swapped)) < 0.01


@pytest.mark.parametrize("target", ["chroma", "cbcr"])
@pytest.mark.parametrize("kind", ["mse", "l1", "huber"])
def test_saturation_weight_counts_colourful_pixels_more(kind, target):
    hsv = np.array([[[[0, 255, 255], [0, 0, 128]]]], np.uint8)  # pure red (strength 1 in both), gray (0)
    pred = colour.record_target(hsv, target) + 0.5
    plain = float(TargetLoss(target, kind)(hsv, pred))
    weighted = float(TargetLoss(target, kind, saturation_weight=2.0)(hsv, pred))
    assert weighted == pytest.approx(plain * 2.0, rel=1e-5)  # weights 3 and 1 average to 2


def test_a_saved_model_reloads_in_safe_mode(tmp_path):
    model = build_model(ModelParams(), 32)  # the default: pretrained Lite0 as a nested model
    model.compile(loss=TargetLoss("chroma", "huber"), metrics=[TargetRMSE("chroma")])
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    x = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_resnet50_imagenet_weights_fail_with_a_clear_message_without_the_internet(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached copy of the weights
    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(RuntimeError, match="encoder: lite0"):
        build_model(ModelParams(encoder="resnet50", encoder_weights="imagenet", decoder_widths=(8,) * 5), 64)


def test_lite0_with_four_decoder_widths_predicts_at_half_resolution_and_is_scored_there():
    from src.model.network import output_stride

    p = ModelParams(encoder="lite0", encoder_weights="none", decoder_widths=(32, 16, 16, 8), target="bins")
    assert output_stride(p) == 2
    model = build_model(p, 64)
    assert model.predict(np.zeros((1, 64, 64, 1), np.uint8), verbose=0).shape == (1, 32, 32, len(colour.chroma_bins()))
    hsv = np.zeros((1, 4, 4, 3), np.uint8)
    hsv[:, :, :2] = (0, 255, 255)  # left half red, right half gray
    hsv[:, :, 2:] = (0, 0, 128)
    exact = colour.bin_labels(colour.record_target(hsv[:, ::2, ::2], "bins"))  # one label per 2x2 cell
    metric = TargetRMSE("bins", stride=2)
    metric.update_state(hsv, np.log(exact + 1e-9))
    assert float(metric.result()) < 0.1  # the soft labels' mean is near the colour; a wrong cell costs ~0.7
    assert float(TargetLoss("bins", "ce", stride=2)(hsv, np.log(exact + 1e-9))) < float(
        TargetLoss("bins", "ce", stride=2)(hsv, np.log(exact[:, :, ::-1] + 1e-9)))


def test_class_rebalancing_weighs_rare_colours_up():
    from src.model.losses import class_weights

    prior = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(class_weights(prior, 1.0), 1.0)
    w = class_weights(prior, 0.5)
    assert w[2] > w[1] > 1.0 > w[0] and float(prior @ w) == pytest.approx(1.0)
    hsv = np.array([[[[0, 255, 255], [0, 0, 128]]]], np.uint8)  # a red pixel, a gray pixel
    k = len(colour.chroma_bins())
    flat = np.zeros((1, 1, 2, k), np.float32)  # uniform scores: both pixels cost log(k) unweighted
    weights = np.ones(k)
    weights[colour.bin_labels(colour.record_target(hsv, "bins"))[0, 0, 0].argmax()] = 3.0  # red's class is rare
    plain = float(TargetLoss("bins", "ce")(hsv, flat))
    assert float(TargetLoss("bins", "ce", class_weights=weights)(hsv, flat)) > 1.3 * plain


@pytest.mark.parametrize("global_context", [False, True])
def test_global_context_lets_the_whole_photo_inform_every_pixel(global_context):
    """A change in one corner of a large photo reaches the opposite corner's colour only through the pooled head
    (the convolutions' reach is a few hundred pixels). Pretrained: a random Lite0's features vanish."""
    keras.utils.set_random_seed(0)
    p = ModelParams(encoder="lite0", decoder_widths=(16, 16, 8, 8), target="bins", global_context=global_context)
    model = build_model(p, 64)
    photo = np.random.default_rng(0).integers(0, 255, (1, 768, 768, 1), dtype=np.uint8)
    changed = photo.copy()
    changed[:, :192, :192] = 255 - changed[:, :192, :192]
    before, after = (keras.ops.convert_to_numpy(model(x, training=False)) for x in (photo, changed))
    far = np.abs(after[:, -16:, -16:] - before[:, -16:, -16:]).max()  # the opposite corner, at half resolution
    assert far > 1e-6 if global_context else far == 0.0  # small: the untrained decoder damps it
    with pytest.raises(ValueError, match="needs the lite0 or lite2 encoder"):
        build_model(ModelParams(encoder="light", decoder_widths=(16, 8, 8), global_context=True), 32)
