"""train.init_from: a model started from the release's weights, and a separate hint decoder trained beside them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from src.core.params import from_dict
from src.data import colour, hints
from src.data.pipeline import InputSpec
from src.model import release
from src.model.network import HINT_PREFIX, build_model
from src.model.predict import Colorizer
from src.training import fit

RED = hints.colour_of("#e02020", "bins")


AUTOMATIC = release.automatic()  # the release without hint inputs (the release itself, or the file it builds on)


def released_params():
    return from_dict("train", release.read_meta(AUTOMATIC)["train"])


def gray_photo(side: int = 96) -> np.ndarray:
    y, x = np.mgrid[:side, :side]
    return ((np.sin(x / 9.0) + np.cos(y / 13.0)) * 60 + 128).astype(np.uint8)


@pytest.mark.parametrize("decoder, encoder", [("shared", "shared"), ("separate", "shared"), ("separate", "copy")])
def test_a_hint_model_started_from_the_release_first_colours_as_it_does_hints_or_not(decoder, encoder):
    p = released_params()
    model_p = dataclasses.replace(p.model, hints=True, hint_decoder=decoder, hint_encoder=encoder,
                                  encoder_weights="none")
    model = build_model(model_p, 96)
    hint_stem = encoder == "copy"  # the copy's hint stem has no counterpart in the release: it stays at zero
    assert release.warm_start(model, AUTOMATIC) == len(model.weights) - hint_stem
    base = release.load(AUTOMATIC)
    started = Colorizer(model, InputSpec.of(model_p), base.image_size)
    photo = gray_photo()
    auto = base.colorize([photo])[0]
    assert started.colorize([photo])[0].tobytes() == auto.tobytes()
    # the hint channels' weights start at zero: a hint changes nothing until the model has learnt to use it
    hinted = started.colorize([photo], given=[[hints.Hint(40, 40, RED)]])[0]
    assert hinted.tobytes() == auto.tobytes()


@pytest.mark.parametrize("hint_encoder", ["shared", "copy"])
def test_a_separate_hint_decoder_learns_hints_and_leaves_photos_without_them_as_the_release_colours_them(
        tiny_shards, tmp_path, hint_encoder):
    p = released_params()
    model_p = dataclasses.replace(p.model, hints=True, hint_decoder="separate", hint_encoder=hint_encoder,
                                  inference_size=0)
    p = dataclasses.replace(p, model=model_p, init_from=str(AUTOMATIC), encoder_trainable=False,
                            encoder_frozen_epochs=0, hint_none_share=0.0, crop=0, scale=(1.0, 1.0), epochs=1,
                            steps_per_epoch=6, batch_size=8, learning_rate=0.01)
    fit.configure(p)
    result = fit.fit(p, tiny_shards, tmp_path, verbose=0)
    base = release.load(AUTOMATIC)
    released = {k: v.numpy() for k, v in release.variables(base.model).items()}
    trained = {k: v.numpy() for k, v in release.variables(result.model).items()}
    plain = [k for k in trained if not k.startswith(HINT_PREFIX)]
    assert len(plain) == len(released) and all(np.array_equal(trained[k], released[k]) for k in plain)
    # the weights on the hint channels (the last 6 inputs of a level's first conv) started at zero and learnt
    assert np.abs(trained[f"{HINT_PREFIX}dec1_conv1/kernel"][:, :, -6:]).sum() > 0
    if hint_encoder == "copy":  # the copy of the encoder learns, its hint stem from zero, its BatchNorm statistics not
        copy = f"{HINT_PREFIX}{p.model.encoder}/"
        assert np.abs(trained[f"{copy}stem_side/kernel"]).sum() > 0
        assert not np.array_equal(trained[f"{copy}head/kernel"], released[f"{p.model.encoder}/head/kernel"])
        np.testing.assert_array_equal(trained[f"{copy}head_bn/moving_variance"],
                                      released[f"{p.model.encoder}/head_bn/moving_variance"])
    colorizer = Colorizer(result.model, InputSpec.of(model_p), base.image_size)
    photo = gray_photo()
    auto = base.colorize([photo])[0]
    assert colorizer.colorize([photo])[0].tobytes() == auto.tobytes()
    hinted = colorizer.colorize([photo], given=[[hints.Hint(20, 20, RED)]])[0].astype(int)
    assert np.abs(hinted[:30, :30] - auto[:30, :30]).max() > 0
    # beyond the hint's reach (about a third of the side) the release's colours, to rounding
    assert np.abs(hinted[-30:, -30:] - auto[-30:, -30:]).max() <= 1


@pytest.mark.parametrize("hint_encoder", ["shared", "copy"])
def test_a_fresh_hint_decoder_starts_untrained_at_the_class_prior_beside_the_release(hint_encoder):
    p = released_params()
    model_p = dataclasses.replace(p.model, hints=True, hint_decoder="separate", hint_encoder=hint_encoder,
                                  encoder_weights="none")
    p = dataclasses.replace(p, model=model_p, init_from=str(AUTOMATIC), encoder_trainable=False, hint_start="fresh")
    prior = np.ones(len(colour.chroma_bins(model_p.target)))
    prior[0] = 5.0
    prior /= prior.sum()
    model = fit.compile_model(p, 96, 10, prior)
    stored = {k: v.numpy() for k, v in release.variables(release.load(AUTOMATIC).model).items()}
    started = {k: v.numpy() for k, v in release.variables(model).items()}
    plain = [k for k in started if not k.startswith(HINT_PREFIX)]
    assert all(np.array_equal(started[k], stored[k]) for k in plain)
    assert not np.array_equal(started[f"{HINT_PREFIX}dec0_conv1/kernel"][:, :, :8], stored["dec0_conv1/kernel"][:, :, :8])
    np.testing.assert_allclose(started[f"{HINT_PREFIX}head/bias"], np.log(prior + 1e-6), rtol=1e-6)
    assert not np.allclose(started["head/bias"], np.log(prior + 1e-6))  # the release's head is not reset
    if hint_encoder == "copy":  # a fresh decoder still reads a copy of the release's encoder, not a random one
        encoder = p.model.encoder
        copied = [k for k in started if k.startswith(f"{HINT_PREFIX}{encoder}/") and "stem_side" not in k]
        assert len(copied) == len([k for k in stored if k.startswith(f"{encoder}/")])
        assert all(np.array_equal(started[k], stored[k.removeprefix(HINT_PREFIX)]) for k in copied)


def test_a_separate_hint_decoder_needs_a_model_to_start_from():
    p = released_params()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, hints=True, hint_decoder="separate"))
    with pytest.raises(ValueError, match="train.init_from"):
        fit.compile_model(p, 64, 10)


def test_a_release_built_on_another_holds_only_what_changed_and_needs_its_base(tmp_path):
    import shutil

    p = released_params()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, hints=True, hint_decoder="separate"),
                            init_from=str(AUTOMATIC))
    model = build_model(dataclasses.replace(p.model, encoder_weights="none"), 288)
    release.warm_start(model, AUTOMATIC)
    kernel = model.get_layer(f"{HINT_PREFIX}dec1_conv1").kernel
    kernel.assign(kernel.numpy() + 0.25)  # as if trained: only the hint decoder moves
    base = tmp_path / AUTOMATIC.name
    for f in (AUTOMATIC, release.checksum_file(AUTOMATIC)):
        shutil.copy(f, tmp_path / f.name)
    meta = {"name": "hinted", "image_size": 288, "train": dataclasses.asdict(p)}
    built = tmp_path / "hinted.npz"
    release.write(model, meta, built, base=base)
    with np.load(built) as npz:
        stored = set(npz.files) - {release.META_KEY}
    assert stored == {k for k in release.variables(model) if k.startswith(HINT_PREFIX)}  # the hint decoder alone
    loaded = release.load(built)
    np.testing.assert_allclose(loaded.model.get_layer(f"{HINT_PREFIX}dec1_conv1").kernel.numpy(), kernel.numpy(),
                               rtol=1e-3)  # float16
    photo = gray_photo()
    assert loaded.colorize([photo])[0].tobytes() == release.load(AUTOMATIC).colorize([photo])[0].tobytes()
    base.unlink()
    with pytest.raises(release.ReleaseError, match=f"built on {AUTOMATIC.name}"):
        release.load(built)


def test_a_hint_path_started_from_the_release_s_colours_as_the_release_does_with_hints():
    """train.hint_init_from: the release's hint path beside its own base is the release again, pixel for pixel."""
    meta = release.read_meta(release.WEIGHTS)
    p = from_dict("train", meta["train"])
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, encoder_weights="none"),
                            hint_init_from=str(release.WEIGHTS), hint_start="fresh")
    colorizer = Colorizer(fit.compile_model(p, 96, 10), InputSpec.of(p.model), meta["image_size"])
    released = release.load(release.WEIGHTS)
    photo, given = gray_photo(), [[hints.Hint(40, 40, RED), hints.Hint(10, 70, RED)]]
    assert colorizer.colorize([photo], given=given)[0].tobytes() == released.colorize([photo], given=given)[0].tobytes()


def test_a_hint_path_cannot_start_from_a_release_without_one():
    p = released_params()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, hints=True, hint_decoder="separate",
                                                         encoder_weights="none"),
                            init_from=str(AUTOMATIC), encoder_trainable=False, hint_init_from=str(AUTOMATIC))
    with pytest.raises(release.ReleaseError, match="no hint path of this network's shape"):
        fit.compile_model(p, 96, 10)
