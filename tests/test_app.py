"""The web page (`python -m src.app`) in a real browser, Debian's chromium driven by Playwright, and its HTTP API."""
from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from src.colour import chroma_bins, luma
from tests.conftest import photo
from tests.services import free_port, start, stop, unavailable, wait_for
from tests.test_evaluate import shards, trained  # noqa: F401  fixtures: a model that learnt real colours

pytest.importorskip("gradio", reason='the web app\'s extra is not installed (pip install -e ".[app]")')
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = "COLORIZER_SCREENSHOT"  # where the page-with-a-result test also saves its screenshot (README)


def mean_chroma(bgr: np.ndarray) -> float:
    return float(np.mean(bgr.max(axis=-1).astype(int) - bgr.min(axis=-1)))


@contextlib.contextmanager
def app_server(trained, *args: str, **env: str):
    model_tmp, uri = trained
    port = free_port()
    server = start([sys.executable, "-m", "src.app", "--model", str(model_tmp / "models"), "--port", str(port),
                    "--mlflow-ui", "", *args], MLFLOW_TRACKING_URI=uri, **env)
    try:
        wait_for(f"http://127.0.0.1:{port}/", server, "the web app")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


@pytest.fixture(scope="module")
def app(trained):  # noqa: F811
    with app_server(trained, "--max-upload-mb", "1") as base:  # the test photos are far smaller
        yield base


@pytest.fixture
def page(app):
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is absent (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
        page.goto(app)
        page.wait_for_selector("#photos input[type=file]", state="attached")
        yield page
        browser.close()


def gray_file(tmp_path: Path, name: str, size: tuple[int, int], seed: int) -> tuple[Path, np.ndarray]:
    gray = cv2.cvtColor(photo(size, seed=seed), cv2.COLOR_BGR2GRAY)
    path = tmp_path / name
    cv2.imwrite(str(path), gray)
    return path, gray


def colourise(page, files: list[Path], links: int) -> list:
    page.set_input_files("#photos input[type=file]", [str(f) for f in files])
    page.click("#colourise")
    found = page.locator("#downloads a[download]")
    found.nth(links - 1).wait_for(timeout=120_000)
    return [found.nth(i) for i in range(found.count())]


def download(page, link, path: Path) -> Path:
    with page.expect_download() as pending:
        link.click()
    pending.value.save_as(path)
    return path


def test_the_page_colours_a_gray_photo_at_full_resolution_and_downloads_it(page, tmp_path):
    path, gray = gray_file(tmp_path, "old.png", (181, 243), seed=5)
    (link,) = colourise(page, [path], 1)
    out = cv2.imread(str(download(page, link, tmp_path / "out.png")), cv2.IMREAD_UNCHANGED)
    assert out.shape == (181, 243, 3)
    assert np.abs(luma(out).astype(int) - gray).max() <= 2  # the photo's own brightness, within rounding
    assert mean_chroma(out) > 5 and mean_chroma(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)) == 0  # real colour
    page.locator("#slider img").first.wait_for()
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT):
        shutil.copyfile(shot, os.environ[SCREENSHOT])


def test_a_text_file_named_jpg_gets_a_message_and_the_page_keeps_working(page, tmp_path):
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is not a photo\n")
    page.set_input_files("#photos input[type=file]", [str(bad)])
    page.click("#colourise")
    message = page.get_by_text("No photo could be read: holiday.jpg: not an image")
    message.first.wait_for(timeout=60_000)
    page.reload()
    page.wait_for_selector("#photos input[type=file]", state="attached")
    path, _ = gray_file(tmp_path, "fine.png", (64, 80), seed=1)
    assert len(colourise(page, [path], 1)) == 1


def test_two_photos_give_two_results_and_a_zip_of_both(page, tmp_path):
    first, _ = gray_file(tmp_path, "one.png", (70, 90), seed=2)
    second = tmp_path / "two.png"
    cv2.imwrite(str(second), photo((50, 60), seed=3))  # a colour photo: made gray first
    links = colourise(page, [first, second], 3)
    assert sorted(link.get_attribute("download") for link in links) == ["coloured.zip", "one.png", "two.png"]
    (archive,) = [link for link in links if link.get_attribute("download") == "coloured.zip"]
    with zipfile.ZipFile(download(page, archive, tmp_path / "all.zip")) as opened:
        assert sorted(opened.namelist()) == ["one.png", "two.png"]
    assert page.locator("#gallery img").count() >= 2


def test_the_http_api_gives_the_pixels_of_colorize_and_refuses_bad_uploads(trained, app, tmp_path):  # noqa: F811
    path, _ = gray_file(tmp_path, "scan.jpg", (123, 211), seed=4)
    reply = requests.post(f"{app}/api/colorize", files={"photo": path.open("rb")}, timeout=120)
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    served = cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_UNCHANGED)
    model_tmp, _ = trained
    subprocess.run([sys.executable, "-m", "src.colorize", str(path), "--out", str(tmp_path / "cli"), "--model",
                    str(model_tmp / "models")], check=True, capture_output=True)
    assert np.array_equal(served, cv2.imread(str(tmp_path / "cli" / "scan.png")))

    bomb = tmp_path / "bomb.png"  # a tiny PNG whose header declares 20000 x 20000 pixels
    tiny = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    tiny[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width and height, and the chunk's CRC to match
    tiny[29:33] = struct.pack(">I", zlib.crc32(bytes(tiny[12:29])))
    bomb.write_bytes(bytes(tiny))
    refused = requests.post(f"{app}/api/colorize", files={"photo": bomb.open("rb")}, timeout=120)
    assert refused.status_code == 400 and "too large" in refused.json()["detail"]
    text = requests.post(f"{app}/api/colorize", files={"photo": ("a.jpg", b"not a photo")}, timeout=60)
    assert text.status_code == 400 and "not an image" in text.json()["detail"]
    assert requests.post(f"{app}/api/colorize", files={"photo": path.open("rb")}, timeout=120).status_code == 200


def test_uploads_over_the_limit_are_refused(app, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(3 * 2**20))
    refused = requests.post(f"{app}/api/colorize", files={"photo": big.open("rb")}, timeout=60)
    assert refused.status_code == 413 and "larger than 1048576 bytes" in refused.json()["detail"]
    assert requests.get(app, timeout=30).status_code == 200  # and the app still serves


def test_vividness_re_decodes_stored_outputs_without_the_network(tmp_path):
    from src import app as web
    from src.model import build_model
    from src.params import ModelParams
    from src.pipeline import InputSpec
    from src.predict import Colorizer

    model = build_model(ModelParams(encoder="light", encoder_widths=(8, 16), decoder_widths=(8,), target="bins"), 32)
    head = model.get_layer("head")  # every pixel: 40% gray, 60% a red class (not left to a random init)
    prior = np.full(len(chroma_bins()), 1e-6)
    prior[np.argmin(np.hypot(*chroma_bins().T))] = 0.4
    prior[np.argmin(np.hypot(*(chroma_bins() - [0.6, 0.0]).T))] = 0.6
    head.set_weights([np.zeros_like(head.get_weights()[0]), np.log(prior).astype(np.float32)])
    colorizer = Colorizer(model, InputSpec("luma", "bins", 1.0, 0.0), 32)
    path, gray = gray_file(tmp_path, "old.png", (40, 56), seed=6)
    studio = web.Studio(web.Loaded(colorizer, "test"), tmp_path / "results")
    (stored,), problems = studio.colourise([str(path)])
    assert problems == [] and stored.scores.shape == (32, 32, len(chroma_bins()))
    offline = web.Studio(web.Loaded(replace(colorizer, model=None), "test"), tmp_path / "results")  # no network
    (plain,), _ = offline.render([stored], temperature=1.0, boost=0.0)
    (vivid,), files = offline.render([stored], temperature=0.3, boost=8.0)
    assert plain.shape == vivid.shape == (40, 56, 3) and files[0].name == "old.png"
    assert mean_chroma(vivid) > mean_chroma(plain)
    assert np.array_equal(plain, colorizer.colorize([gray])[0])  # T 1, no boost: what the model gives


def test_the_app_leaves_nothing_behind_when_it_stops(trained, tmp_path):  # noqa: F811
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    path, _ = gray_file(tmp_path, "old.png", (30, 40), seed=8)
    with app_server(trained, TMPDIR=str(scratch)) as base:
        assert requests.post(f"{base}/api/colorize", files={"photo": path.open("rb")}, timeout=120).status_code == 200
        assert [p.name[:14] for p in scratch.iterdir()] == ["colorizer-app-"]  # its one temporary folder
    assert list(scratch.iterdir()) == []


def test_by_default_the_page_serves_the_registry_s_champion_and_links_its_run(trained, shards, tmp_path,  # noqa: F811
                                                                           monkeypatch):
    import http.server
    import threading

    from src import app as web
    from src.params import EvaluateParams
    from src.stages import evaluate
    from tests.test_evaluate import run_evaluate, where

    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer")
    result, out = run_evaluate(trained, shards, tmp_path, p)
    assert evaluate.track(p, result, where(trained), model_dir=model_tmp / "models", shards_dir=shards.root,
                          reports=out)  # this model beats both baselines: promoted
    ui = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)  # an `mlflow ui`
    threading.Thread(target=ui.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        loaded = web.load(None, f"http://127.0.0.1:{ui.server_port}")
    finally:
        ui.shutdown()
    from mlflow.tracking import MlflowClient

    champion = MlflowClient(uri).get_model_version_by_alias("colorizer", "champion")
    assert loaded.source == "models:/colorizer@champion" and loaded.version == champion.version
    assert loaded.run_id == champion.run_id and loaded.run_url.endswith(f"/runs/{champion.run_id}")
    assert f"(version {champion.version})" in loaded.describe() and loaded.run_url in loaded.describe()
    gray = cv2.cvtColor(photo((40, 60), seed=9), cv2.COLOR_BGR2GRAY)
    assert loaded.colorizer.colorize([gray])[0].shape == (40, 60, 3)
    assert web.load(None, "http://127.0.0.1:1").run_url == ""  # no `mlflow ui` there: no link
