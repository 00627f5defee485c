"""Web app under load: a few hundred HTTP API requests, 4 at a time, a mix of 256x256, 2 MP and 12 MP photos.

    python -m benchmarks.load                      # the released model
    python -m benchmarks.load --requests 300 --concurrency 4 --model models

Starts `python -m src.app` on a free loopback port, then sends the requests (in a fixed shuffled order: mostly
small photos, some 2 MP, a few 12 MP) from `--concurrency` client threads while another thread fetches the page
(GET /) every half second. Reports failed requests, p50 / p99 latency per size, the page's latency during the load,
and the server's peak RSS (polled every 50 ms) beside its idle RSS. Figures go to experiments/benchmarks/load.json.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import psutil
import requests

from benchmarks.common import save
from tests.services import free_port, start, stop, wait_for

MIX = {"256x256": ((256, 256), 0.7), "2MP 1600x1200": ((1200, 1600), 0.25), "12MP 4000x3000": ((3000, 4000), 0.05)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def photos(folder: Path) -> dict[str, Path]:
    """One gray JPEG per size from a real photo (scikit-image's astronaut)."""
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    out = {}
    for name, ((h, w), _) in MIX.items():
        out[name] = folder / f"{h}x{w}.jpg"
        cv2.imwrite(str(out[name]), cv2.resize(gray, (w, h), interpolation=cv2.INTER_CUBIC))
    return out


def during_large_photo(base: str, folder: Path, small: Path) -> dict[str, float]:
    """While one 25 MP photo is being coloured: the page's and a 256x256 photo's latency, and the large one's."""
    from skimage import data

    large = folder / "25MP.jpg"
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(large), cv2.resize(gray, (5000, 5000), interpolation=cv2.INTER_CUBIC))
    times = {}

    def post_large():
        t = time.perf_counter()
        requests.post(f"{base}/api/colorize", files={"photo": large.open("rb")}, timeout=600).raise_for_status()
        times["large_25MP_s"] = time.perf_counter() - t

    worker = threading.Thread(target=post_large)
    worker.start()
    time.sleep(0.5)
    t = time.perf_counter()
    requests.get(base, timeout=60).raise_for_status()
    times["page_during_25MP_s"] = time.perf_counter() - t
    t = time.perf_counter()
    requests.post(f"{base}/api/colorize", files={"photo": small.open("rb")}, timeout=600).raise_for_status()
    times["256x256_during_25MP_s"] = time.perf_counter() - t
    worker.join()
    return {k: round(v, 3) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="release", help="as src.app takes it (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=300, help="(default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (default: %(default)s)")
    args = parser.parse_args(argv)
    rng = random.Random(0)
    sizes = rng.choices(list(MIX), weights=[w for _, w in MIX.values()], k=args.requests)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start([sys.executable, "-m", "src.app", "--model", args.model, "--port", str(port), "--mlflow-ui", ""])
    latencies: dict[str, list[float]] = {name: [] for name in MIX}
    failures, page, peak, done = [], [], [0], threading.Event()
    try:
        wait_for(base, server, "the web app", seconds=300)
        proc = psutil.Process(server.pid)
        with tempfile.TemporaryDirectory() as tmp:
            files = photos(Path(tmp))
            for path in files.values():  # warm-up: one of each size
                requests.post(f"{base}/api/colorize", files={"photo": path.open("rb")}, timeout=600).raise_for_status()
            idle = proc.memory_info().rss
            beside = during_large_photo(base, Path(tmp), files["256x256"])

            def watch():
                while not done.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    time.sleep(0.05)

            def page_poll():
                while not done.is_set():
                    t = time.perf_counter()
                    ok = requests.get(base, timeout=60).status_code == 200
                    page.append(time.perf_counter() - t if ok else float("inf"))
                    time.sleep(0.5)

            def one(name: str):
                t = time.perf_counter()
                try:
                    reply = requests.post(f"{base}/api/colorize", files={"photo": files[name].open("rb")}, timeout=600)
                    reply.raise_for_status()
                    latencies[name].append(time.perf_counter() - t)
                except requests.RequestException as exc:
                    failures.append(f"{name}: {exc}")

            helpers = [threading.Thread(target=f, daemon=True) for f in (watch, page_poll)]
            for h in helpers:
                h.start()
            began = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as clients:
                list(clients.map(one, sizes))
            wall = time.perf_counter() - began
            done.set()
            for h in helpers:
                h.join()
    finally:
        done.set()
        stop(server)
    results = {"model": args.model, **beside, "requests": args.requests, "concurrency": args.concurrency,
               "failed": len(failures), "wall_s": round(wall, 1), "requests_per_s": round(args.requests / wall, 2),
               "idle_rss_mib": round(idle / 2**20), "peak_rss_mib": round(peak[0] / 2**20),
               "page_p50_s": round(statistics.median(page), 3), "page_max_s": round(max(page), 3),
               "page_fetches": len(page)}
    for name, values in latencies.items():
        if values:
            results[name] = {"n": len(values), "p50_s": round(percentile(values, 50), 3),
                             "p99_s": round(percentile(values, 99), 3)}
    for line in failures[:5]:
        print("failed:", line)
    print("\n".join(f"{k}: {v}" for k, v in results.items()))
    print(f"wrote {save('load', results)}")


if __name__ == "__main__":
    main()
