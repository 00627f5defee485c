"""Scale benchmark: every stage through `dvc repro` on the development photos and on N times as many.

    python -m benchmarks.scale [--profile experiments/recipe.yaml] [--times 1 4] [--train-steps 150]

The profile's download.folders (1x), then each folder linked N times under other names (`<name>-k`): the same
files under other names, so N x the photos. For each scale, in a fresh copy of the repository: time and peak RSS
(the dvc process and the stage together) of `dvc repro -s` for each stage in order, the train stage capped at one
epoch of --train-steps steps (its img/s is the stage's own figure, after the compiling first step), then the time
of a no-change `dvc repro` (the median of 3, each run's time kept). Results: experiments/benchmarks/scale.json. Run it alone: it owns every core.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import run_measured, save
from tests.repo import copy_repo, dvc

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("download", "hsv-split", "shard", "train", "evaluate")
NO_CHANGE_RUNS = 3  # no-change `dvc repro` runs timed; the median is reported


def linked_copies(folders: list[Path], dest: Path, times: int) -> list[Path]:
    """Each folder, then times-1 hard-linked copies of it named `<name>-k` (no extra disk until download)."""
    out = list(folders)
    for folder in folders:
        for k in range(1, times):
            copy = dest / f"{folder.name}-{k}"
            shutil.copytree(folder, copy, copy_function=os.link)
            out.append(copy)
    return out


def configure(repo: Path, profile: Path, folders: list[Path], train_steps: int) -> None:
    run_measured([sys.executable, "-m", "src.profile", str(profile)], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["download"]["folders"] = [str(f) for f in folders]
    params["train"].update(epochs=1, steps_per_epoch=train_steps, sample_every=100)
    params["evaluate"].update(register_as="", extra_folder=str((ROOT / params["evaluate"]["extra_folder"]).resolve())
                              if params["evaluate"]["extra_folder"] else "")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measure(repo: Path, logs: Path) -> dict:
    figures: dict = {}
    for name in STAGES:
        log = logs / f"{name}.log"
        wall, peak = run_measured([sys.executable, "-m", "dvc", "repro", "-s", name], repo, log=log)
        figures[f"{name}_s"], figures[f"{name}_peak_mib"] = round(wall, 1), round(peak)
        print(f"  {name}: {wall:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
        if name == "train":
            rate = re.search(r"([\d.]+) img/s after", log.read_text(errors="replace"))
            figures["train_img_s"] = float(rate.group(1)) if rate else None
    times = []
    for _ in range(NO_CHANGE_RUNS):  # the first walks files the stages' work pushed out of the page cache
        start = time.perf_counter()
        result = dvc("repro", cwd=repo)
        times.append(round(time.perf_counter() - start, 2))
        assert "Data and pipelines are up to date" in result.stdout, result.stdout
    figures["no_change_repro_s"], figures["no_change_repro_runs_s"] = statistics.median(times), times
    records = yaml.safe_load((repo / "reports" / "hsv_split.json").read_text())
    figures["photos"], figures["used"] = records["files"], records["used"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=Path, default=ROOT / "experiments" / "recipe.yaml")
    parser.add_argument("--times", type=int, nargs="+", default=[1, 4], help="scales to measure")
    parser.add_argument("--train-steps", type=int, default=150, help="training steps measured at each scale")
    args = parser.parse_args()
    profile = yaml.safe_load(args.profile.read_text())
    folders = [(ROOT / f).resolve() for f in profile["download"]["folders"]]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        sys.exit(f"not found: {', '.join(missing)} (the profile's download.folders)")
    results: dict = {"profile": str(args.profile.relative_to(ROOT)), "cores": os.cpu_count(),
                     "train_steps": args.train_steps}
    for times in args.times:
        work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{times}x-"))
        try:
            print(f"{times}x:", flush=True)
            repo = copy_repo(work / "repo")
            configure(repo, args.profile.resolve(), linked_copies(folders, work / "photos", times), args.train_steps)
            results[f"{times}x"] = measure(repo, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"saved {save('scale', results)}", flush=True)


if __name__ == "__main__":
    main()
