"""`python -m src.colorize` as a careless user runs it: one bad photo or option never costs the others."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from src.core.paths import ROOT
from tests.conftest import code_carrying_model, photo


def colorize(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "src.colorize", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=600)


def gray(path: Path, seed: int) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(photo((48, 64), seed=seed), cv2.COLOR_BGR2GRAY))
    return path


def test_a_photo_that_cannot_be_named_or_written_is_skipped_and_the_rest_are_coloured(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    long_name = gray(inputs / ("a" * 240 + ".png"), seed=1)  # its temporary name would pass NAME_MAX (255)
    blocked = gray(inputs / "b-blocked.png", seed=2)
    after = gray(inputs / "c-after.png", seed=3)
    (out / "b-blocked.png").mkdir(parents=True)  # a folder where its result should go: the write fails
    done = colorize(str(inputs), "--out", str(out), "--batch-size", "1", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{blocked}: skipped (cannot write" in done.stderr and "coloured 2 of 3 files" in done.stderr
    assert cv2.imread(str(out / after.name)).shape == (48, 64, 3)  # the photo after the failure is coloured
    (shortened,) = [p for p in out.iterdir() if p.name.startswith("aaaa")]
    assert len(shortened.name.encode()) <= 210 and cv2.imread(str(shortened)).shape == (48, 64, 3)
    assert long_name.exists()


def test_what_can_be_known_before_the_run_is_a_one_line_error_before_the_model_loads(tmp_path):
    photo_file = gray(tmp_path / "old.png", seed=4)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    for args, message in (
        (["--out", str(a_file)], f"--out {a_file} is a file, not a folder"),
        (["--out", str(a_file / "sub")], f"--out {a_file / 'sub'} cannot be created"),
        (["--out", str(tmp_path / "o"), "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["--out", str(tmp_path / "o"), "--batch-size", "-1"], "--batch-size: must be at least 1, got -1"),
    ):
        done = colorize(str(photo_file), *args, tmp_path=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], done.stderr
        assert "model:" not in done.stderr and "Traceback" not in done.stderr  # refused before loading anything


def test_a_model_that_carries_code_is_refused_in_one_line(tmp_path):
    model_dir = code_carrying_model(tmp_path / "models")
    cv2.imwrite(str(tmp_path / "old.png"), np.full((32, 32), 90, np.uint8))
    done = colorize(str(tmp_path / "old.png"), "--out", str(tmp_path / "out"), "--model", str(model_dir),
                    tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert f"cannot load model {model_dir}" in error and "Lambda" in error


def test_the_before_after_picture_has_a_column_per_model_between_gray_and_truth(tmp_path):
    """`python -m src.results --picture` (the README's and issue 37's grids): gray | each --model | truth; `--runtime
    keras` as colorize takes it (a release file without recorded ONNX checksums runs there)."""
    photos = []
    for i in range(2):
        photos.append(tmp_path / f"p{i}.png")
        cv2.imwrite(str(photos[-1]), photo((60, 90), seed=20 + i))
    out = tmp_path / "grid.png"
    done = subprocess.run([sys.executable, "-m", "src.results", "--picture", *map(str, photos), "--model", "release",
                           "release", "--runtime", "keras", "--picture-out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert done.returncode == 0, done.stderr
    picture = cv2.imread(str(out))
    assert picture.shape[:2] == (2 * 256, 4 * 256)  # 2 photos; gray, release twice, truth
    left, one, two, right = (picture[:256, k * 256:(k + 1) * 256].astype(int) for k in range(4))
    assert np.array_equal(one, two) and (left.max(-1) - left.min(-1)).max() <= 1  # gray has no colour
    truth = cv2.resize(cv2.imread(str(photos[0])), (256, 256), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(right - truth).mean() < 2
