"""Shared fixtures: real photos written to temporary folders, and the optional ../shared/data photos."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


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
