"""The released colorizer on onnxruntime: the same Colorizer, its network an ONNX session; no TensorFlow is loaded.

The release's ONNX files (src/model/onnx_export.py) live in a cache, COLORIZER_CACHE (default ~/.cache/colorizer):
each is checked against the SHA-256 the release records for it before it runs. A file that is missing or does not
match is built again by `python -m src.export` in a child process, so this process never loads TensorFlow; a
build that still does not match is refused in one line (`--runtime keras` colours without ONNX).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from src.core import determinism
from src.core.files import sha256_file
from src.core.paths import ROOT
from src.model import release

CACHE_VAR = "COLORIZER_CACHE"
GRAY, HINTS, SCORES = "gray", "hints", "scores"  # the graphs' input and output names


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "colorizer")


class OnnxNetwork:
    """An ONNX file run by onnxruntime on the CPU, opened on first use (a release's hint path may never be)."""

    def __init__(self, path: Path):
        self.path = path
        self._session = None

    def forward(self, inputs) -> np.ndarray:
        feed = inputs if isinstance(inputs, dict) else {GRAY: inputs}
        return self.session.run([SCORES], feed)[0]

    @property
    def session(self):
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = determinism.threads()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return self._session


def files(weights: Path = release.WEIGHTS, meta: dict | None = None) -> dict[str, Path]:
    """The release's checked ONNX files in the cache, built there first where missing or not the recorded ones.
    `meta`: the release's, when already read (reading it checks the release file's SHA-256)."""
    names = file_names(weights, meta or release.read_meta(weights))
    expected = recorded(weights)
    unrecorded = sorted(set(names.values()) - set(expected))
    if unrecorded:
        raise release.ReleaseError(f"{weights.name} records no SHA-256 for {', '.join(unrecorded)} "
                                   f"({checksums(weights).name}): `python -m src.export --record`")
    paths = {kind: cache_dir() / name for kind, name in names.items()}

    def stale() -> list[str]:
        return [name for kind, name in names.items() if not _matches(paths[kind], expected[name])]

    if stale():
        from filelock import FileLock

        cache_dir().mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_dir() / ".build.lock")):  # processes starting together build once
            if stale():
                _build(weights)
                wrong = stale()
                if wrong:
                    raise release.ReleaseError(f"{', '.join(wrong)} built here is not the released one: other "
                                               "package versions than requirements.lock? `--runtime keras` colours "
                                               "without it")
    return paths


def load(weights: Path = release.WEIGHTS):
    """The released Colorizer on onnxruntime (ReleaseError with a one-line reason where it cannot be)."""
    from src.data.pipeline import InputSpec
    from src.model.predict import Colorizer

    meta = release.read_meta(weights)
    p = release.from_dict("train", meta["train"])
    paths = files(weights, meta)
    automatic = OnnxNetwork(paths["automatic"])
    if "hints" not in paths:
        return Colorizer(automatic, InputSpec.of(p.model), int(meta["image_size"]))
    return Colorizer(OnnxNetwork(paths["hints"]), InputSpec.of(p.model), int(meta["image_size"]), automatic)


def load_file(path: Path, meta: dict):
    """A model folder's colorizer exported as one ONNX file (the registry's ONNX flavour), `meta` its model.json."""
    from src.model.predict import Colorizer, spec_of

    return Colorizer(OnnxNetwork(path), spec_of(meta), int(meta["image_size"]))


def file_names(weights: Path, meta: dict | None = None) -> dict[str, str]:
    """{"automatic": file name[, "hints": file name]}: a release's ONNX files (a hint release has both)."""
    names = {"automatic": f"{weights.stem}-automatic.onnx"}
    if (meta or release.read_meta(weights))["train"].get("model", {}).get("hints"):
        names["hints"] = f"{weights.stem}-hints.onnx"
    return names


def checksums(weights: Path) -> Path:
    return weights.with_suffix(".onnx.sha256")


def recorded(weights: Path) -> dict[str, str]:
    """{file name: SHA-256} as the release records them (sha256sum format); empty where it records none."""
    sums = checksums(weights)
    if not sums.exists():
        return {}
    return {name: digest for digest, name in (line.split() for line in sums.read_text().splitlines() if line.strip())}


def _matches(path: Path, digest: str) -> bool:
    return path.exists() and sha256_file(path) == digest


def _build(weights: Path) -> None:
    print(f"onnx: building {weights.stem}'s ONNX files into {cache_dir()} once (about 20 s)", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "src.export", "--release", str(weights), "--out", str(cache_dir())],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise release.ReleaseError(f"the ONNX export of {weights.name} failed: {reason}")
