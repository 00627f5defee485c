"""Shared fixtures: real photos written to temporary folders, and the optional ../shared/data photos."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

import src  # noqa: F401  first: the numeric settings of every entry point (src/core/determinism.py)
from tests.services import pg_databases, pg_url  # noqa: F401  fixtures: fresh PostgreSQL databases per test

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


SHARED_MODULE_FIXTURES = ("tests.test_app", "tests.stages.test_evaluate")
LONGEST = "test_the_ci_quality_profile_beats_both_baselines_on_cbsd68"  # a third of the suite's work


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist, tests of modules whose fixtures train a model or start the app share one worker (they
    are built once). Order, so that the workers finish together: a test of the session's reproduced pipeline (its
    build, shared by all workers, starts at once), the longest test, the other tests of the reproduced pipeline,
    the other slow tests, the rest."""
    for item in items:
        if item.module.__name__ in SHARED_MODULE_FIXTURES:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    builder = next((item for item in items if "reproduced" in item.fixturenames), None)

    def rank(item) -> int:
        if item.get_closest_marker("slow") is None:
            return 4
        if "reproduced" in item.fixturenames:
            return 0 if item is builder else 2
        return 1 if item.name == LONGEST else 3

    items.sort(key=rank)


TRACKING_LEFTOVERS = ("mlruns", "mlflow.db", "mlartifacts")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory, worker_id) -> Path:
    """The release's ONNX files go to a cache of this session's, common to its workers, never the user's: the first
    process that colours with the release builds them there (src/model/onnx_runtime.py), once."""
    from src.model import onnx_runtime

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    os.environ[onnx_runtime.CACHE_VAR] = str(shared / "onnx-cache")  # subprocesses inherit it
    return shared / "onnx-cache"


@pytest.fixture(scope="session", autouse=True)
def repository_untouched():
    """Tests work in temporary folders: the checkout must look the same after the session as before."""
    before, stores = git_status(), {p for p in TRACKING_LEFTOVERS if (ROOT / p).exists()}
    yield
    after = git_status()
    assert after == before, f"the tests changed the repository:\nbefore:\n{before}\nafter:\n{after}"
    left = {p for p in TRACKING_LEFTOVERS if (ROOT / p).exists()} - stores  # ignored by git, so checked here
    assert not left, f"the tests left MLflow files in the checkout: {sorted(left)}"


NOISE = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\]|absl::InitializeLog|rebuild TensorFlow|\w+Warning: ")


def noise(output: str) -> list[str]:
    """TensorFlow/absl native log lines and Python warnings in a command's output: none where nothing is wrong."""
    return [line for line in output.splitlines() if NOISE.search(line)]


def code_carrying_model(model_dir: Path) -> Path:
    """A model folder whose Keras file carries code (a Lambda layer): the loaders must refuse it."""
    import json

    import keras

    model_dir.mkdir(parents=True)
    inputs = keras.Input((32, 32, 1))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(model_dir / "model.keras")
    (model_dir / "model.json").write_text(json.dumps({"gray": "luma", "target": "chroma", "image_size": 32}))
    return model_dir


def shared_folder(name: str) -> Path:
    """A folder of ../shared/data, or a clean skip where this checkout has none."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (development photos are optional)")
    return folder


def photo(size: tuple[int, int] = (120, 160), seed: int = 0) -> np.ndarray:
    """A colourful uint8 BGR test image: smooth gradients plus noise, like a small photo."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bgr = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], axis=-1)
    bgr += rng.normal(0, 8, bgr.shape)
    return np.clip(bgr, 0, 255).astype(np.uint8)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Six colourful PNG photos in a folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"photo{i}.png"), photo(seed=i))
    return folder


def build_shards(raw: Path, tmp: Path, shard_params=None, tile: int = 40, image_size: int = 32):
    """Run hsv-split and shard on `raw` into `tmp`; returns the ShardSet."""
    from src.core.params import HsvSplitParams, ShardParams
    from src.data.shards import ShardSet
    from src.stages import hsv_split, shard

    hsv_split.run(HsvSplitParams(image_size=image_size, tile=tile, workers=1), raw=raw, out=tmp / "hsv",
                  report=tmp / "r.csv", metrics=tmp / "m.json")
    shard.run(shard_params or ShardParams(val_ratio=0.2, test_ratio=0.2, shard_records=16), hsv=tmp / "hsv",
              out=tmp / "shards")
    return ShardSet.open(tmp / "shards")


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shards of 30 synthetic colour photos cut into 32 px tiles (about 100 train records)."""
    tmp = tmp_path_factory.mktemp("tiny")
    raw = tmp / "raw"
    raw.mkdir()
    for i in range(30):
        cv2.imwrite(str(raw / f"p{i:02d}.png"), photo((80, 120), seed=i))
    return build_shards(raw, tmp, tile=40, image_size=32)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, worker_id) -> Path:
    """The default pipeline reproduced once in a copy of the repository, as a user runs it (`dvc repro`); its
    output is in repro.log. One build serves all pytest-xdist workers: the first to get here builds it under a
    file lock, the others wait for it. Tests never change it: they work on a copy (tests.repo.variant)."""
    from filelock import FileLock

    if worker_id == "master":  # no xdist
        return _reproduce(tmp_path_factory.mktemp("reproduced") / "repo")
    shared = tmp_path_factory.getbasetemp().parent  # this session's, common to its workers
    repo = shared / "reproduced" / "repo"
    with FileLock(str(shared / "reproduced.lock")):
        if not (repo / "repro.log").exists():
            shutil.rmtree(repo.parent, ignore_errors=True)  # a build that failed in another worker
            repo.mkdir(parents=True)
            _reproduce(repo)
    return repo


def _reproduce(repo: Path) -> Path:
    from tests.repo import copy_repo, dvc

    copy_repo(repo)
    result = dvc("repro", cwd=repo)
    (repo / "repro.log").write_text(result.stdout + result.stderr)  # last: marks the build complete
    return repo
