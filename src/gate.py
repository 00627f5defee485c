"""CI gate: is reports/eval.json current, no worse than the committed baseline, and better than doing nothing?

    python -m src.gate            # exit 0: every check passed; 1: one failed (one line each, FAIL first)
    python -m src.gate --update   # accept the current metrics as the baseline (clean tree only; commit the file)

Checks, each with params.yaml `evaluate.gate_*`:
- current: reports/eval.json exists, matches the md5 dvc.lock recorded for it, and `dvc status` of evaluate and
  every stage before it is clean (the code, params and data have not changed since). A committed metrics file
  from an earlier commit, or one a stage never wrote, fails here.
- regression: on `gate_set`, the model's RMSE and hue error exceed the baseline's by no more than
  `gate_tolerance` and `gate_hue_tolerance` (set from measured run-to-run differences: docs/evaluation.md).
- better than doing nothing (when `gate_margin_db` is set): the model's PSNR beats BOTH the gray and the
  constant-colour baselines on the same images by the margin.
The baseline file records the commit, the params hash and the data md5 it came from.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from src.core import params
from src.core.files import write_json
from src.core.params import EvaluateParams
from src.core.paths import EVAL_METRICS, ROOT
from src.training import provenance

EVAL_STAGE = "evaluate"


def is_current(metrics: Path = EVAL_METRICS, root: Path = ROOT) -> tuple[bool, str]:
    """Does `metrics` belong to the current dvc.lock, and does dvc.lock match the code, params and data?"""
    if not metrics.exists():
        return False, f"{metrics.name} is missing: run `dvc repro`"
    stage = provenance.lock_stage(EVAL_STAGE, root / "dvc.lock")
    recorded = {o["path"]: o.get("md5") for o in stage.get("outs", []) + stage.get("metrics", [])}
    rel = metrics.resolve().relative_to(root.resolve()).as_posix()
    if recorded.get(rel) != provenance.file_md5(metrics):
        return False, f"{rel} is not the one dvc.lock records: run `dvc repro`"
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        changed = repo.status(targets=[EVAL_STAGE], with_deps=True)
    if changed:
        return False, f"stale: {', '.join(sorted(changed))} changed since dvc.lock (`dvc status`): run `dvc repro`"
    return True, f"{rel} belongs to the current dvc.lock"


def metrics_of(result: dict, set_name: str) -> dict:
    if set_name not in result:
        raise SystemExit(f"gate: no '{set_name}' set in the metrics (evaluate.gate_set; extra needs extra_folder)")
    return result[set_name]


def check(current: dict, baseline: dict, p: EvaluateParams) -> list[tuple[bool, str]]:
    """[(passed, one line)] for the regression and better-than-nothing checks of `p.gate_set`."""
    now, then = metrics_of(current, p.gate_set), metrics_of(baseline, p.gate_set)
    out = []
    for key, tolerance, unit in (("rmse", p.gate_tolerance, ""), ("hue_error", p.gate_hue_tolerance, " deg")):
        a, b = now["model"][key], then["model"][key]
        out.append((a <= b + tolerance, f"{p.gate_set} {key} {a:.4f} vs baseline {b:.4f} (tolerance +{tolerance}{unit})"))
    if p.gate_margin_db is not None:
        psnr = now["model"]["psnr"]
        for name in ("gray", "constant"):
            other = now[name]["psnr"]
            out.append((psnr >= other + p.gate_margin_db, f"{p.gate_set} PSNR {psnr:.2f} dB vs {name} baseline "
                        f"{other:.2f} dB (must beat it by {p.gate_margin_db} dB)"))
    return out


def provenance_record(root: Path = ROOT) -> dict:
    shards = provenance.dvc_hash("data/shards", root / "dvc.lock")
    return {"commit": provenance.git_commit(root), "params_sha256": provenance.params_sha256(root / "params.yaml"),
            "data_md5": shards, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def differences(baseline: dict, root: Path = ROOT) -> list[str]:
    """Notes (not failures) where the baseline came from other params or data: a deliberate change passes or
    fails on its metrics; update the baseline once it is accepted."""
    made = baseline.get("provenance", {})
    now = provenance_record(root)
    return [f"note: baseline {key} {made.get(key, '?')[:12]} differs from now {now[key][:12]}"
            for key in ("params_sha256", "data_md5") if made.get(key) != now[key]]


def update(metrics: Path, baseline: Path, root: Path = ROOT) -> int:
    dirty = provenance.git_dirty(root)
    if dirty:
        print(f"gate: refusing --update on a dirty tree (commit first, so the baseline names its commit):\n{dirty}",
              file=sys.stderr)
        return 1
    current, reason = is_current(metrics, root)
    if not current:
        print(f"gate: refusing --update: {reason}", file=sys.stderr)
        return 1
    write_json(baseline, {"provenance": provenance_record(root), **json.loads(metrics.read_text())})
    print(f"gate: baseline {baseline} updated from {metrics}; commit it")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="write the current metrics as the new baseline")
    parser.add_argument("--metrics", type=Path, default=EVAL_METRICS, help="current metrics (default: %(default)s)")
    parser.add_argument("--baseline", type=Path, help="committed baseline (default: params evaluate.gate_baseline)")
    args = parser.parse_args(argv)
    p = params.load_or_exit("evaluate")
    baseline_path = args.baseline or ROOT / p.gate_baseline
    if args.update:
        return update(args.metrics, baseline_path)
    if not baseline_path.exists():
        print(f"gate: no baseline at {baseline_path}: create one with `python -m src.gate --update`", file=sys.stderr)
        return 2
    try:
        baseline = json.loads(baseline_path.read_text())
    except json.JSONDecodeError as exc:
        print(f"gate: {baseline_path} is not JSON ({exc}): restore it from git", file=sys.stderr)
        return 2
    current, reason = is_current(args.metrics)
    results = [(current, reason)]
    if current:
        results += check(json.loads(args.metrics.read_text()), baseline, p)
    for passed, line in sorted(results, key=lambda r: r[0]):
        print(f"gate: {'PASS' if passed else 'FAIL'} {line}")
    for note in differences(baseline):
        print(f"gate: {note}")
    failed = sum(not passed for passed, _ in results)
    print(f"gate: {'FAIL' if failed else 'PASS'} ({failed} of {len(results)} checks failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
