"""hsv-split on a folder of odd and broken files: each is used or skipped with a reason, nothing crashes."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import psutil
import pytest
from PIL import Image

from src.core.params import HsvSplitParams
from src.data import colour, images
from src.stages import hsv_split
from tests.conftest import ROOT, photo, shared_folder


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def rgb(seed: int = 0, size=(120, 160)) -> Image.Image:
    return Image.fromarray(cv2.cvtColor(photo(size, seed), cv2.COLOR_BGR2RGB))


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    (root / "nested" / "deeper").mkdir(parents=True)
    rgb(1).save(root / "plain.png")
    rgb(2).save(root / "UPPER.JPG", quality=90)
    rgb(3).save(root / "nested" / "deeper" / "ünïcödé name with spaces.jpg")
    rgb(4).convert("CMYK").save(root / "cmyk.jpg")
    cv2.imwrite(str(root / "sixteen_bit.png"), photo(seed=5).astype(np.uint16) * 257)
    cv2.imwrite(str(root / "rgba.png"), cv2.cvtColor(photo(seed=6), cv2.COLOR_BGR2BGRA))
    rgb(7).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    rgb(8).save(root / "photo.webp")
    rgb(9).save(root / "photo.tiff")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image\n")
    (root / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    full = (root / "UPPER.JPG").read_bytes()
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    trailer = np.random.default_rng(1).bytes(64 * 1024).replace(b"\xff\xd9", b"\xff\x00")  # no EOI inside
    (root / "motion_photo.jpg").write_bytes(full + trailer)  # a phone's video after the JPEG's end marker
    png = (root / "plain.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    corrupt = bytearray(png)
    corrupt[100:400] = b"\0" * 300  # inside the compressed pixels, headers and IEND intact
    (root / "corrupt.png").write_bytes(bytes(corrupt))
    rgb(10, size=(16, 16)).save(root / "tiny.png")
    rgb(11).convert("L").save(root / "gray.jpg")
    tinted = cv2.cvtColor(cv2.cvtColor(photo(seed=12), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR).astype(np.int16)
    tinted[..., 2] += 3  # a faint warm cast, as on old prints
    cv2.imwrite(str(root / "near_gray.png"), np.clip(tinted, 0, 255).astype(np.uint8))
    return root


EXPECTED_USED = {"plain.png", "UPPER.JPG", "nested/deeper/ünïcödé name with spaces.jpg", "cmyk.jpg",
                 "sixteen_bit.png", "rgba.png", "palette.png", "photo.webp", "photo.tiff", "motion_photo.jpg"}
EXPECTED_SKIPS = {
    "empty.jpg": "empty file",
    "notes.txt": "not an image",
    "random.jpg": "not an image",
    "truncated.jpg": "truncated JPEG",
    "truncated.png": "truncated PNG",
    "bomb.png": "too large",
    "corrupt.png": "undecodable",
    "tiny.png": "too small",
    "gray.jpg": "grayscale",
    "near_gray.png": "near-gray",
}


def test_every_odd_file_is_used_or_skipped_with_its_reason(odd_folder, tmp_path):
    p = HsvSplitParams(image_size=32, min_size=32, workers=2, part_records=4)
    out, report, metrics = tmp_path / "hsv", tmp_path / "report.csv", tmp_path / "counts.json"
    table = hsv_split.run(p, raw=odd_folder, out=out, report=report, metrics=metrics).set_index("file")

    assert set(table.index) == EXPECTED_USED | set(EXPECTED_SKIPS)
    assert set(table.index[table["status"] == "used"]) == EXPECTED_USED
    for name, reason in EXPECTED_SKIPS.items():
        assert table.loc[name, "status"] == "skipped"
        assert table.loc[name, "reason"].startswith(reason), (name, table.loc[name, "reason"])

    index = pd.read_csv(out / "records.csv")
    assert len(index) == len(EXPECTED_USED) == int(table["records"].sum())
    parts = sorted(out.glob("part-*.npy"))
    assert len(parts) == 3  # 10 records, 4 per part
    records = np.concatenate([np.load(f) for f in parts])
    assert records.shape == (10, 32, 32, 4) and records.dtype == np.uint8
    assert records[..., colour.H].max() < colour.HUE_RANGE
    assert pd.read_csv(report).shape[0] == len(table)
    assert '"skipped": 10' in metrics.read_text()


def test_a_2gb_file_of_zeros_is_skipped_without_reading_it(tmp_path):
    zeros = tmp_path / "photo.jpg"
    with open(zeros, "wb") as f:
        f.truncate(2 * 2**30)  # sparse: no disk used
    code = (  # under a 1 GiB address-space limit, reading the file whole would be a MemoryError
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)); from pathlib import Path; "
        "from src.core.params import HsvSplitParams; from src.stages.hsv_split import process_file; "
        f"print(process_file(Path({str(zeros)!r}), Path({str(tmp_path)!r}), HsvSplitParams()).row['reason'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ | {"OPENBLAS_NUM_THREADS": "1"}, cwd=ROOT).stdout
    assert out.strip() == f"file too large: {2 * 2**30} bytes exceeds {HsvSplitParams().max_file_bytes}"


def test_a_worker_killed_mid_file_is_a_recorded_skip_and_the_stage_finishes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(6):
        rgb(i).save(raw / f"p{i}.png")
    yy, xx = np.mgrid[0:9000, 0:9000]
    big = np.stack([(xx % 256), (yy % 256), ((xx + yy) % 256)], axis=-1).astype(np.uint8)
    cv2.imwrite(str(raw / "p3_huge.png"), big)  # ~240 MB once decoded: the worker holding it is easy to spot
    del big, yy, xx
    done = threading.Event()
    killed = []

    def oom_killer():  # plays the kernel's OOM killer: any worker past 200 MB of its own memory dies
        while not done.is_set():
            for child in psutil.Process().children(recursive=True):
                try:
                    # unique memory, not RSS: a child forked from this big process shares all its pages until it
                    # execs (the resource tracker, the forkserver); killing one of those there broke a CI run
                    if child.memory_full_info().uss > 200 * 2**20:
                        child.kill()
                        killed.append(child.pid)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.05)

    watcher = threading.Thread(target=oom_killer, daemon=True)
    watcher.start()
    try:
        p = HsvSplitParams(image_size=32, min_size=32, workers=2)
        table = hsv_split.run(p, raw=raw, out=tmp_path / "hsv", report=tmp_path / "r.csv",
                              metrics=tmp_path / "m.json").set_index("file")
    finally:
        done.set()
        watcher.join()
    assert len(killed) >= 2  # in the pool, then again when retried alone
    assert table.loc["p3_huge.png", "status"] == "skipped"
    assert table.loc["p3_huge.png", "reason"].startswith("worker died")
    assert set(table.index[table["status"] == "used"]) == {f"p{i}.png" for i in range(6)}
    assert len(pd.read_csv(tmp_path / "hsv" / "records.csv")) == 6


def test_sixteen_bit_and_cmyk_decode_to_the_right_colours(odd_folder):
    expected = photo(seed=5)
    sixteen = images.read(odd_folder / "sixteen_bit.png", 10**8).bgr
    assert sixteen.dtype == np.uint8 and np.abs(sixteen.astype(int) - expected).max() <= 1
    cmyk = images.read(odd_folder / "cmyk.jpg", 10**8).bgr
    assert np.abs(cmyk.astype(int) - photo(seed=4)).mean() < 12


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rgb(0, size=(100, 200)).save(tmp_path / "rotated.jpg", exif=exif)
    decoded = images.read(tmp_path / "rotated.jpg", 10**8).bgr
    assert decoded.shape[:2] == (200, 100)


def test_tiles_split_a_photo_into_a_centred_grid():
    crops = images.square_crops(photo((250, 410)), 100)
    assert len(crops) == 2 * 4 and all(c.shape == (100, 100, 3) for c in crops)
    assert images.square_crops(photo((250, 410)), 0)[0].shape == (250, 250, 3)


def test_squash_keeps_the_whole_photo_where_crop_keeps_its_centre(tmp_path):
    bands = np.zeros((60, 180, 3), np.uint8)
    bands[:, :60], bands[:, 60:120], bands[:, 120:] = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # red | green | blue
    (tmp_path / "raw").mkdir()
    cv2.imwrite(str(tmp_path / "raw" / "bands.png"), bands)
    hues = {}
    for fit in ("crop", "squash"):
        hsv_split.run(HsvSplitParams(image_size=30, fit=fit, workers=1), raw=tmp_path / "raw", out=tmp_path / fit,
                      report=tmp_path / f"{fit}.csv", metrics=tmp_path / f"{fit}.json")
        (part,) = sorted((tmp_path / fit).glob("*.npy"))
        record = np.load(part)[0]
        hues[fit] = {int(record[15, x, colour.H]) for x in (0, 15, 29)}  # left, middle, right column
    assert hues["crop"] == {60}  # only the green centre
    assert hues["squash"] == {0, 60, 120}  # red, green and blue, squeezed into one square


def test_missing_raw_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="download stage"):
        hsv_split.run(HsvSplitParams(), raw=tmp_path / "nope", out=tmp_path / "o", report=tmp_path / "r.csv",
                      metrics=tmp_path / "m.json")


def test_imagenet_sample_folder_accounts_for_every_file(tmp_path):
    folder = shared_folder("imagenet-sample")
    p = HsvSplitParams(image_size=32)
    table = hsv_split.run(p, raw=folder, out=tmp_path / "hsv", report=tmp_path / "r.csv", metrics=tmp_path / "m.json")
    files = sorted(f.name for f in folder.iterdir() if f.is_file())
    assert sorted(table["file"]) == files and len(files) == 1000
    reasons = table.loc[table["status"] == "skipped", "reason"]
    assert (reasons == "grayscale").sum() >= 23  # the sample holds 23 mode-L photos
    assert table["reason"].str.startswith("error").sum() == 0


def test_large_jpegs_are_decoded_at_a_reduced_scale_that_keeps_enough_pixels(tmp_path):
    rgb(1, size=(400, 600)).save(tmp_path / "big.jpg")
    data = (tmp_path / "big.jpg").read_bytes()
    reduced = images.decode(data, 10**8, max_scale=np.inf, min_side=64)
    assert reduced.scale == 4 and reduced.bgr.shape == (100, 150, 3)
    assert (reduced.width, reduced.height) == (600, 400)
    assert images.decode(data, 10**8, max_scale=1.5, min_side=64).scale == 1  # 96 px tiles -> 64 px: no room
