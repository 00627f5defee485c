"""The web page (`python -m src.app`) in a real browser, Debian's chromium driven by Playwright, and its HTTP API."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from src.data.colour import chroma_bins, luma
from src.serving.stamp import DIGITAL_SOURCE_TYPE
from tests import clips
from tests.conftest import photo
from tests.services import app_page, free_port, start, stop, wait_for
from tests.stages.test_evaluate import shards, trained  # noqa: F401  fixtures: a model that learnt real colours

pytest.importorskip("gradio", reason='the web app\'s extra is not installed (pip install -e ".[app]")')
SCREENSHOT = "COLORIZER_SCREENSHOT"  # where the page-with-a-result test also saves its screenshot (docs/serving.md)


def mean_chroma(bgr: np.ndarray) -> float:
    return float(np.mean(bgr.max(axis=-1).astype(int) - bgr.min(axis=-1)))


@contextlib.contextmanager
def app_server(model, *args: str, **env: str):
    model_tmp, uri = model
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
    with app_page(app) as page:
        yield page


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
    with Image.open(tmp_path / "out.png") as im:  # where it came from, in its metadata
        assert im.text["Digital source type"] == DIGITAL_SOURCE_TYPE and im.text["Model"] == "models"
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
    with Image.open(io.BytesIO(reply.content)) as im, Image.open(tmp_path / "cli" / "scan.png") as cli:
        assert im.text == cli.text  # the same provenance as the CLI's
        assert im.text["Model"] == "models" and im.text["Digital source type"].endswith(
            "/trainedAlgorithmicMedia")

    bomb = tmp_path / "bomb.png"  # a tiny PNG whose header declares 20000 x 20000 pixels
    tiny = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    tiny[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width and height, and the chunk's CRC to match
    tiny[29:33] = struct.pack(">I", zlib.crc32(bytes(tiny[12:29])))
    bomb.write_bytes(bytes(tiny))
    refused = requests.post(f"{app}/api/colorize", files={"photo": bomb.open("rb")}, timeout=120)
    assert refused.status_code == 400 and "too large" in refused.json()["detail"]
    text = requests.post(f"{app}/api/colorize", files={"photo": ("a.jpg", b"not a photo")}, timeout=60)
    assert text.status_code == 400 and "not an image" in text.json()["detail"]
    hinted = requests.post(f"{app}/api/colorize", files={"photo": path.open("rb")}, timeout=60,
                           data={"hints": '[{"x": 5, "y": 5, "colour": "#ff0000"}]'})
    assert hinted.status_code == 400 and "models takes no hints" in hinted.json()["detail"]
    assert requests.post(f"{app}/api/colorize", files={"photo": path.open("rb")}, timeout=120).status_code == 200


def test_the_http_api_colours_a_film_with_its_sound_and_refuses_bad_ones(app, tmp_path):
    source = clips.panning_clip(tmp_path / "pan.mp4", frames=12, fps=6)
    reply = requests.post(f"{app}/api/colorize-video", files={"video": source.open("rb")}, timeout=300)
    assert reply.status_code == 200 and reply.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(reply.content)
    served, given = clips.probe(tmp_path / "out.mp4"), clips.probe(source)
    assert (served["frames"], served["size"], served["rate"]) == (12, given["size"], given["rate"])
    assert served["audio"][0] == "aac" and served["tags"]["digital_source_type"] == DIGITAL_SOURCE_TYPE
    text = requests.post(f"{app}/api/colorize-video", files={"video": ("a.mp4", b"not a video")}, timeout=60)
    assert text.status_code == 400 and "not a readable video" in text.json()["detail"]
    long = clips.write(tmp_path / "long.mp4", clips.pan(clips.real_photo(), 62, size=(64, 48), step=1), fps=1,
                       audio=False)  # 62 s at 1 frame/s: over the page's minute
    refused = requests.post(f"{app}/api/colorize-video", files={"video": long.open("rb")}, timeout=60)
    assert refused.status_code == 400 and "longer than the limit" in refused.json()["detail"]


def test_the_page_colours_a_film_and_offers_it_to_play_and_download(page, tmp_path):
    source = clips.panning_clip(tmp_path / "old film.mp4", frames=12, fps=6)
    page.set_input_files("#film input[type=file]", [str(source)])
    page.click("#colour-film")
    link = page.locator("#film-download a[download]")
    link.first.wait_for(timeout=120_000)
    assert page.locator("#film-out video").count() == 1  # playable on the page
    got = clips.probe(download(page, link.first, tmp_path / "got.mp4"))
    assert got["frames"] == 12 and got["audio"][0] == "aac" and got["tags"]["model"] == "models"


def test_uploads_over_the_limit_are_refused(app, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(3 * 2**20))
    refused = requests.post(f"{app}/api/colorize", files={"photo": big.open("rb")}, timeout=60)
    assert refused.status_code == 413 and "larger than 1048576 bytes" in refused.json()["detail"]
    assert requests.get(app, timeout=30).status_code == 200  # and the app still serves


def disk_use(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            total += path.stat().st_size if path.is_file() else 0
    return total


def test_a_chunked_upload_is_stopped_at_the_limit_while_it_arrives(trained, tmp_path):  # noqa: F811
    """No Content-Length to check first: 64 MB streamed in chunks to the API and to the page's upload route, with
    a 1 MB limit; the disk under the app's folder never holds more than the limit plus 1 MB."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    boundary = "b0undary"

    def body(field: str):
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"big.png\"\r\n"
               "Content-Type: image/png\r\n\r\n").encode()
        for _ in range(64):
            yield os.urandom(2**20)
        yield f"\r\n--{boundary}--\r\n".encode()

    with app_server(trained, "--max-upload-mb", "1", TMPDIR=str(scratch)) as base:
        for route, field in (("/api/colorize", "photo"), ("/gradio_api/upload", "files")):
            before, peak, done = disk_use(scratch), [0], threading.Event()

            def watch():
                while not done.is_set():
                    peak[0] = max(peak[0], disk_use(scratch) - before)
                    time.sleep(0.002)

            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                reply = requests.post(base + route, data=body(field), timeout=120,
                                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
                status = reply.status_code
            except requests.ConnectionError:  # the server may close the connection on an upload it refused
                status = 413
            finally:
                done.set()
                watcher.join()
            assert status == 413, route
            assert peak[0] <= 2**20 + 10**6, (route, peak[0])
        assert requests.get(base, timeout=30).status_code == 200


def test_the_page_and_small_photos_are_answered_while_a_large_photo_is_coloured(app, tmp_path):
    """Image work runs off the event loop: a 25 MP photo (a small flat PNG) is still being coloured when the page
    and a 256x256 photo, sent after it, are both answered."""
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), np.full((5000, 5000), 120, np.uint8))
    small, _ = gray_file(tmp_path, "small.png", (256, 256), seed=12)
    finished = {}

    def post(name: str, path: Path):
        reply = requests.post(f"{app}/api/colorize", files={"photo": path.open("rb")}, timeout=300)
        finished[name] = (time.perf_counter(), reply.status_code)

    big = threading.Thread(target=post, args=("large", large))
    big.start()
    time.sleep(0.5)  # the large photo is in the pool by now
    page = requests.get(app, timeout=60)
    finished["page"] = (time.perf_counter(), page.status_code)
    post("small", small)
    big.join()
    assert {name: status for name, (_, status) in finished.items()} == {"large": 200, "page": 200, "small": 200}
    assert finished["page"][0] < finished["large"][0] and finished["small"][0] < finished["large"][0]


def test_vividness_re_decodes_stored_outputs_without_the_network(tmp_path):
    from src import app as web
    from src.core.params import ModelParams
    from src.data.pipeline import InputSpec
    from src.model.network import build_model
    from src.model.predict import Colorizer
    from src.serving.choice import Chosen

    model = build_model(ModelParams(encoder="light", encoder_widths=(8, 16), decoder_widths=(8,), target="bins"), 32)
    head = model.get_layer("head")  # every pixel: 40% gray, 60% a red class (not left to a random init)
    prior = np.full(len(chroma_bins()), 1e-6)
    prior[np.argmin(np.hypot(*chroma_bins().T))] = 0.4
    prior[np.argmin(np.hypot(*(chroma_bins() - [0.6, 0.0]).T))] = 0.6
    head.set_weights([np.zeros_like(head.get_weights()[0]), np.log(prior).astype(np.float32)])
    colorizer = Colorizer(model, InputSpec("luma", "bins", 1.0, 0.0), 32)
    path, gray = gray_file(tmp_path, "old.png", (40, 56), seed=6)
    studio = web.Studio(web.Loaded(Chosen(colorizer, "test", "", "test")), tmp_path / "results")
    (stored,), problems = studio.colourise([str(path)])
    assert problems == [] and stored.scores.shape == (32, 32, len(chroma_bins()))
    offline = web.Studio(web.Loaded(Chosen(replace(colorizer, model=None), "test", "", "test")), tmp_path / "results")  # no network
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


def test_the_page_serves_the_release_unless_the_champion_beat_it(trained, shards, tmp_path, monkeypatch):  # noqa: F811
    import http.server
    import threading

    from mlflow.tracking import MlflowClient

    from src import app as web
    from src.core.params import EvaluateParams
    from src.model import release
    from src.stages import evaluate
    from src.training import registry
    from tests.stages.test_evaluate import run_evaluate, where

    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer")
    result, out = run_evaluate(trained, shards, tmp_path, p)
    assert evaluate.track(p, result, where(trained), model_dir=model_tmp / "models", shards_dir=shards.root,
                          reports=out)  # this model beats both baselines: promoted
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias("colorizer", "champion")
    test = result["test"]
    assert float(champion.tags[registry.TEST_PSNR_TAG]) == pytest.approx(test["model"]["psnr"], abs=1e-4)
    assert float(champion.tags[registry.RELEASE_PSNR_TAG]) == pytest.approx(test["release"]["psnr"], abs=1e-4)
    ui = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)  # an `mlflow ui`
    threading.Thread(target=ui.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        for release_psnr in (test["model"]["psnr"] + 1, test["model"]["psnr"] - 1):  # it loses, then it wins
            client.set_model_version_tag("colorizer", champion.version, registry.RELEASE_PSNR_TAG, f"{release_psnr}")
            loaded = web.load(None, f"http://127.0.0.1:{ui.server_port}")
            wins = release_psnr < test["model"]["psnr"]
            assert loaded.chosen.name == ("models:/colorizer@champion" if wins else release.NAME)
            assert (f"champion v{champion.version} beats the release" if wins else
                    f"champion v{champion.version} does not beat it") in loaded.describe()
            assert (loaded.chosen.run_id == champion.run_id) == wins
            assert loaded.run_url.endswith(f"/runs/{champion.run_id}") == wins
            assert not wins or loaded.run_url in loaded.describe()
    finally:
        ui.shutdown()
    gray = cv2.cvtColor(photo((40, 60), seed=9), cv2.COLOR_BGR2GRAY)
    assert loaded.colorizer.colorize([gray])[0].shape == (40, 60, 3)
    assert web.load(None, "http://127.0.0.1:1").run_url == ""  # no `mlflow ui` there: no link
