"""How fast the page answers a colour hint, in chromium, at 256x256 and 12 MP.

    python -m benchmarks.hints_page                  # the released model
    python -m benchmarks.hints_page --model models --repeat 5

Starts `python -m src.app` on a free loopback port and drives Debian's chromium (Playwright): uploads a gray photo,
colours it, clicks it once to add a hint, then picks a new colour `--repeat` times. For each pick it times, from
the colour's change in the picker to the browser showing it: the hint view redrawn (the result at up to 1024 px)
and the full-resolution download offered. Figures go to experiments/benchmarks/hints_page.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

from benchmarks.common import save
from tests.services import free_port, start, stop, wait_for

SIZES = {"256x256": (256, 256), "12MP 4000x3000": (3000, 4000)}
COLOURS = ["#1e5aff", "#20c030", "#e02020", "#f0c000", "#8020c0", "#00b0b0"]
SHOWN = "([before]) => { const i = document.querySelector('#guide img'); return i && i.src !== before; }"
OFFERED = "([before]) => { const a = document.querySelector('#downloads a[download]'); return a && a.href !== before; }"


def photo(path: Path, size: tuple[int, int]) -> Path:
    from skimage import data

    gray = cv2.cvtColor(cv2.resize(data.astronaut(), size[::-1], interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(path), gray, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def time_picks(page, path: Path, repeat: int) -> dict[str, list[float]]:
    page.set_input_files("#photos input[type=file]", [str(path)])
    page.click("#colourise")
    page.locator("#downloads a[download]").first.wait_for(timeout=300_000)
    view = page.locator("#guide img").first
    view.wait_for(timeout=120_000)
    box = view.bounding_box()
    href = page.get_attribute("#downloads a[download]", "href")
    view.click(position={"x": box["width"] * 0.78, "y": box["height"] * 0.82})
    page.wait_for_function(OFFERED, arg=[href], timeout=300_000)
    page.click("#hint-colour button.dialog-button")
    field = page.locator("#hint-colour .input-wrap input")
    shown, offered = [], []
    for i in range(repeat):
        src, href = view.get_attribute("src"), page.get_attribute("#downloads a[download]", "href")
        field.fill(COLOURS[i % len(COLOURS)])
        start_s = time.perf_counter()
        field.dispatch_event("change")
        page.wait_for_function(SHOWN, arg=[src], timeout=300_000, polling=20)
        shown.append(time.perf_counter() - start_s)
        page.wait_for_function(OFFERED, arg=[href], timeout=300_000, polling=20)
        offered.append(time.perf_counter() - start_s)
    return {"shown_s": shown, "download_s": offered}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="release", help="as src.app takes it (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=5, help="colour picks per size (default: %(default)s)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start([sys.executable, "-m", "src.app", "--model", args.model, "--port", str(port), "--mlflow-ui", ""])
    results = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/", server, "the web app")
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            for name, size in SIZES.items():
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#photos input[type=file]", state="attached")
                times = time_picks(page, photo(Path(tmp) / f"{size[1]}x{size[0]}.jpg", size), args.repeat)
                results[name] = {k: {"median": round(statistics.median(v), 3), "max": round(max(v), 3),
                                     "all": [round(t, 3) for t in v]} for k, v in times.items()}
                print(f"{name}: hint view redrawn in {results[name]['shown_s']['median']:.2f} s (median), "
                      f"full-resolution download offered in {results[name]['download_s']['median']:.2f} s")
                page.close()
            browser.close()
    finally:
        stop(server)
    save("hints_page", {"model": args.model, "repeat": args.repeat, **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
