"""Shared benchmark helpers: a stage run in a subprocess with its peak memory, and result files."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.repo import env

RESULTS = Path(__file__).resolve().parent.parent / "experiments" / "benchmarks"


def run_measured(args: list[str], cwd: Path, poll_s: float = 0.02, log: Path | None = None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MiB of its whole process tree). Its stderr goes to `log`
    (a file, not a pipe: a long stage's progress bars would fill a pipe nobody reads and block it)."""
    temporary = log is None
    log = log or Path(tempfile.mkstemp(prefix="bench-", suffix=".log")[1])
    start = time.perf_counter()
    with open(log, "wb") as err:
        proc = psutil.Popen(args, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=err)
        peak = _watch(proc, poll_s)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{log.read_text(errors='replace')[-3000:]}")
    if temporary:
        log.unlink()
    return wall, peak / 2**20


def _watch(proc: psutil.Popen, poll_s: float) -> int:
    """Peak RSS in bytes of `proc` and its children until it exits."""
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(poll_s)
    return peak


def stage(name: str, cwd: Path) -> tuple[float, float]:
    return run_measured([sys.executable, "-m", f"src.stages.{name}"], cwd)


def save(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
