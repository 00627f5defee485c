"""Web app latency: upload to result for a 256x256 and a 12 MP photo, beside colorize's own time in the same run.

    python -m benchmarks.app                 # the pipeline's models/
    python -m benchmarks.app --models DIR

Starts `python -m src.app` on a free loopback port and times, per size (median of the runs): Colorizer.colorize
in this process (what `python -m src.colorize` runs per photo), the HTTP API (POST /api/colorize: upload, decode,
colour, PNG back), and the page in Debian's chromium (file chosen, "Colourise" clicked, until the PNG's download
link shows), after one warm-up of each. For a hint model, also a hint's redraw in the page: after colourising,
a click on the guide view until the view shows the hinted result (hint_redraw_s), and until its full-resolution
download is ready (hint_download_s).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import requests

from benchmarks.colorize import SIZES, model_and_photo
from benchmarks.common import save
from tests.services import free_port, start, stop, wait_for

CHROMIUM = "/usr/bin/chromium"
RUNS = 3


def timed(fn, runs: int = RUNS) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start_ = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start_)
    return statistics.median(times)


def page_timer(base: str):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
    page = browser.new_page()

    def once(path: Path) -> None:
        page.goto(base)
        page.set_input_files("#photos input[type=file]", [str(path)])
        page.click("#colourise")
        page.locator("#downloads a[download]").first.wait_for(timeout=300_000)

    def redraw(path: Path) -> tuple[float, float]:
        once(path)
        view = page.locator("#guide img").first
        view.wait_for(timeout=300_000)
        src, href = view.get_attribute("src"), page.locator("#downloads a[download]").first.get_attribute("href")
        box = view.bounding_box()
        start_ = time.perf_counter()
        view.click(position={"x": box["width"] / 3, "y": box["height"] / 3})
        page.wait_for_function("([src]) => document.querySelector('#guide img').getAttribute('src') !== src",
                               arg=[src], timeout=300_000)
        shown = time.perf_counter() - start_
        page.wait_for_function("([href]) => { const a = document.querySelector('#downloads a[download]');"
                               " return a && a.getAttribute('href') !== href; }", arg=[href], timeout=300_000)
        return shown, time.perf_counter() - start_

    return once, redraw, lambda: (browser.close(), pw.stop())


def median_pair(fn, runs: int = RUNS) -> tuple[float, float]:
    fn()  # warm-up
    pairs = [fn() for _ in range(runs)]
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)


def main(argv: list[str] | None = None) -> None:
    args, colorizer, photo = model_and_photo(__doc__, argv)
    port = free_port()
    server = start([sys.executable, "-m", "src.app", "--model", str(args.models), "--port", str(port), "--mlflow-ui", ""])
    base = f"http://127.0.0.1:{port}"
    results = {"model": str(args.models), "image_size": colorizer.image_size, "runs": RUNS}
    try:
        wait_for(base, server, "the web app", seconds=300)
        browser, redraw, close = page_timer(base) if Path(CHROMIUM).exists() else (None, None, None)
        with tempfile.TemporaryDirectory() as tmp:
            for name, (h, w, _) in SIZES.items():
                gray = cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC)
                path = Path(tmp) / f"{h}x{w}.png"
                cv2.imwrite(str(path), gray)
                row = {"colorize_s": timed(lambda: colorizer.colorize([gray]))}

                def post(path=path):
                    reply = requests.post(f"{base}/api/colorize", files={"photo": path.open("rb")}, timeout=600)
                    reply.raise_for_status()

                row["http_api_s"] = timed(post)
                if browser:
                    row["page_s"] = timed(lambda path=path: browser(path))
                    if colorizer.spec.hints:
                        row["hint_redraw_s"], row["hint_download_s"] = median_pair(lambda path=path: redraw(path))
                results[name] = {k: round(v, 3) for k, v in row.items()} | {
                    f"{k[:-2]}_x_colorize": round(v / row["colorize_s"], 2) for k, v in row.items() if k != "colorize_s"}
                print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in results[name].items()))
        if close:
            close()
    finally:
        stop(server)
    print(f"wrote {save('app', results)}")


if __name__ == "__main__":
    main()
