"""Shared benchmark helpers: a stage run in a subprocess with its peak memory, and result files."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.repo import env

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "benchmarks"


def run_measured(args: list[str], cwd: Path, poll_s: float = 0.02) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MiB of its whole process tree)."""
    start = time.perf_counter()
    proc = psutil.Popen(args, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(poll_s)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr.read().decode()[-3000:]}")
    return wall, peak / 2**20


def stage(name: str, cwd: Path) -> tuple[float, float]:
    return run_measured([sys.executable, "-m", f"src.stages.{name}"], cwd)


def save(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
