"""Colour where the user says: a hint model through `python -m src.colorize --hints`, the HTTP API and the page in
chromium. A hint moves the colour around its point towards it and leaves far regions as they were.

The model: $COLORIZER_HINT_MODEL (a trained hint model's folder, e.g. `models` after
`python -m src.profile experiments/hints_sparse.yaml && dvc repro`), else the release (which takes hints)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from src.data import colour, hints
from src.model import release
from tests.services import app_page, free_port, start, stop, wait_for
from tests.test_colorize import colorize

SIDE = 256
# two places of scikit-image's astronaut at 256 px, and colours the model would not give them
BLUE = {"x": 36, "y": 172, "colour": "#1e5aff"}
GREEN = {"x": 60, "y": 40, "colour": "#20c030"}
NEAR, FAR = 4, 90  # px around a hint that must follow it, and beyond which nothing may change


def astronaut(path: Path) -> tuple[Path, np.ndarray]:
    from skimage import data

    gray = cv2.cvtColor(cv2.resize(data.astronaut(), (SIDE, SIDE), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(path), gray)
    return path, gray


def distance_map(points: list[dict]) -> np.ndarray:
    ys, xs = np.mgrid[:SIDE, :SIDE]
    return np.min([np.hypot(xs - p["x"], ys - p["y"]) for p in points], axis=0)


def chroma_at(bgr: np.ndarray, point: dict) -> np.ndarray:
    """The mean chroma (the bins encoding) of the disk of radius NEAR around a point."""
    near = np.hypot(*np.mgrid[:SIDE, :SIDE][::-1] - np.array([point["x"], point["y"]])[:, None, None]) <= NEAR
    return colour.record_target(colour.bgr_to_record(bgr), "bins")[near].mean(axis=0)


def assert_follows(hinted: np.ndarray, auto: np.ndarray, points: list[dict]) -> None:
    for point in points:
        want = np.array(hints.colour_of(point["colour"], "bins"))
        before, after = (np.linalg.norm(chroma_at(im, point) - want) for im in (auto, hinted))
        # towards the hint's colour: v4 leaves 0.55 of the way for GREEN on the astronaut's gray backdrop, which it
        # spreads over the whole backdrop (v3: 0.30 in a blob around the point); ignoring the hint leaves 1.0
        assert after < 0.65 * before, (point, before, after)
    far = distance_map(points) > FAR
    change = np.abs(hinted.astype(int) - auto)[far].mean()
    assert change < 1.5, change  # and far regions as they were (mean RGB change in levels)


@pytest.fixture(scope="module")
def hint_model() -> str:
    named = os.environ.get("COLORIZER_HINT_MODEL")
    if named:
        return named
    if not release.read_meta()["train"].get("model", {}).get("hints"):  # its params say so: no network is built
        pytest.skip(f"no hint model: {release.NAME} takes none; set COLORIZER_HINT_MODEL to a trained one")
    return "release"


def test_the_cli_colours_where_the_hints_say_and_records_them(hint_model, tmp_path):
    path, _ = astronaut(tmp_path / "astronaut.png")
    (tmp_path / "hints.json").write_text(json.dumps([BLUE, GREEN]))
    plain = colorize(str(path), "--out", str(tmp_path / "auto"), "--model", hint_model, tmp_path=tmp_path)
    guided = colorize(str(path), "--out", str(tmp_path / "guided"), "--hints", str(tmp_path / "hints.json"),
                      "--model", hint_model, tmp_path=tmp_path)
    assert plain.returncode == 0 and guided.returncode == 0, guided.stderr
    auto, hinted = (cv2.imread(str(tmp_path / d / "astronaut.png")) for d in ("auto", "guided"))
    assert_follows(hinted, auto, [BLUE, GREEN])
    with Image.open(tmp_path / "guided" / "astronaut.png") as im:
        assert json.loads(im.text["Hints"]) == [BLUE, GREEN]


def test_bad_hints_are_one_clear_error(hint_model, tmp_path):
    path, _ = astronaut(tmp_path / "astronaut.png")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps([BLUE, {"x": 300, "y": 5, "colour": "#ff0000"}]))
    done = colorize(str(path), "--out", str(tmp_path / "o"), "--hints", str(outside), "--model", hint_model,
                    tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"astronaut.png: skipped ({outside}: hint 2: (300, 5) is outside the 256x256 photo)" in done.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    two = astronaut(tmp_path / "second.png")[0]
    (tmp_path / "hints.json").write_text(json.dumps([BLUE]))
    for inputs, hint_file, message in (([path], broken, "is not valid JSON"),
                                       ([path, two], tmp_path / "hints.json", "is one list of hints, for one photo"),
                                       ([path], tmp_path / "missing.json", "No such file")):
        done = colorize(*map(str, inputs), "--out", str(tmp_path / "o"), "--hints", str(hint_file), "--model",
                        hint_model, tmp_path=tmp_path)
        assert done.returncode == 2 and message in done.stderr and "model:" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def hint_app(hint_model):
    port = free_port()
    server = start([sys.executable, "-m", "src.app", "--model", hint_model, "--port", str(port), "--mlflow-ui", ""])
    try:
        wait_for(f"http://127.0.0.1:{port}/", server, "the web app")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(server)


def post(app: str, path: Path, given: list | str | None = None) -> requests.Response:
    data = {} if given is None else {"hints": given if isinstance(given, str) else json.dumps(given)}
    return requests.post(f"{app}/api/colorize", files={"photo": path.open("rb")}, data=data, timeout=120)


def test_the_api_takes_hints_and_refuses_bad_ones(hint_app, tmp_path):
    path, _ = astronaut(tmp_path / "astronaut.png")
    auto, hinted = (cv2.imdecode(np.frombuffer(post(hint_app, path, given).content, np.uint8), cv2.IMREAD_COLOR)
                    for given in (None, [BLUE, GREEN]))
    assert_follows(hinted, auto, [BLUE, GREEN])
    for given, message in (([{"x": 10, "y": 999, "colour": "#ff0000"}], "hint 1: (10, 999) is outside"),
                           ([{"x": 10, "y": 10, "colour": "red"}], "hint 1: colour must be RGB hex"),
                           ("not json", "hints are not valid JSON")):
        refused = post(hint_app, path, given)
        assert refused.status_code == 400 and message in refused.json()["detail"], refused.text


@pytest.fixture
def hint_page(hint_app):
    with app_page(hint_app, height=1600) as page:
        yield page


def download_link(page):
    link = page.locator("#downloads a[download]").first
    link.wait_for(timeout=120_000)
    return link


def downloaded(page, tmp_path: Path, name: str) -> np.ndarray:
    with page.expect_download() as pending:
        download_link(page).click()
    pending.value.save_as(tmp_path / name)
    return cv2.imread(str(tmp_path / name))


def new_downloads(page, href: str) -> str:
    """Wait until the page offers a new result file (each render writes another); its address."""
    page.wait_for_function("([href]) => { const a = document.querySelector('#downloads a[download]');"
                           " return a && a.getAttribute('href') !== href; }", arg=[href], timeout=60_000)
    return download_link(page).get_attribute("href")


def test_a_click_with_a_picked_colour_recolours_around_it_in_the_page(hint_page, tmp_path):
    page = hint_page
    path, gray = astronaut(tmp_path / "astronaut.png")
    page.set_input_files("#photos input[type=file]", [str(path)])
    page.click("#colourise")
    auto = downloaded(page, tmp_path, "auto.png")
    href = download_link(page).get_attribute("href")
    view = page.locator("#guide img").first
    view.wait_for(timeout=60_000)
    box = view.bounding_box()
    view.click(position={"x": (BLUE["x"] + 0.5) * box["width"] / SIDE, "y": (BLUE["y"] + 0.5) * box["height"] / SIDE})
    href = new_downloads(page, href)  # a hint at the model's own colour: redrawn
    x, y, picked = _row(page)
    assert abs(x - BLUE["x"]) <= 1 and abs(y - BLUE["y"]) <= 1
    page.click("#hint-colour button.dialog-button")
    field = page.locator("#hint-colour .input-wrap input")
    assert field.input_value() == picked == "#%02x%02x%02x" % tuple(auto[y, x][::-1])  # starts at the model's colour
    field.fill(BLUE["colour"])
    field.dispatch_event("change")
    new_downloads(page, href)
    # Closed as a person would before going on: an open picker closes on the next click outside it, and the page
    # reflows under that click (the download link moves up), so a click meant for the link would be lost.
    page.click("#hint-colour button.dialog-button")
    field.wait_for(state="detached")
    hinted = downloaded(page, tmp_path, "hinted.png")
    assert hinted.shape == (SIDE, SIDE, 3) and np.abs(colour.luma(hinted).astype(int) - gray).max() <= 2
    assert _row(page)[2] == BLUE["colour"]
    assert_follows(hinted, auto, [{**BLUE, "x": x, "y": y}])


def _row(page) -> tuple[int, int, str]:
    """The hint table's last row: x, y, colour."""
    cells = [c for c in page.inner_text("#hints").split() if c.isdigit() or c.startswith("#")]
    return int(cells[-3]), int(cells[-2]), cells[-1]
