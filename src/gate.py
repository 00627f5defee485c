"""CI gate: fail when the pipeline's eval RMSE is worse than the committed baseline beyond the tolerance.

    python -m src.gate            # compare reports/eval.json with experiments/baseline_eval.json
    python -m src.gate --update   # accept the current metrics as the new baseline (commit the file)

The tolerance is params.yaml evaluate.gate_tolerance, in RGB RMSE units (0..255).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from src import params
from src.files import atomic_path
from src.paths import EVAL_BASELINE, EVAL_METRICS

KEY = "eval_rmse"


def check(current: dict, baseline: dict, tolerance: float) -> tuple[bool, str]:
    """(passed, message naming both numbers)."""
    now, then = float(current[KEY]), float(baseline[KEY])
    passed = now <= then + tolerance
    verdict = "PASS" if passed else "FAIL: the model got worse"
    return passed, f"{KEY} {now:.4f} vs baseline {then:.4f} (tolerance +{tolerance}): {verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="write the current metrics as the new baseline")
    parser.add_argument("--metrics", type=Path, default=EVAL_METRICS, help="current metrics (default: %(default)s)")
    parser.add_argument("--baseline", type=Path, default=EVAL_BASELINE, help="committed baseline (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.metrics.exists():
        print(f"gate: {args.metrics} not found: run `dvc repro` first", file=sys.stderr)
        return 2
    if args.update:
        with atomic_path(args.baseline) as tmp:
            shutil.copyfile(args.metrics, tmp)
        print(f"gate: baseline {args.baseline} updated from {args.metrics}; commit it")
        return 0
    if not args.baseline.exists():
        print(f"gate: no baseline at {args.baseline}: create one with `python -m src.gate --update`", file=sys.stderr)
        return 2
    passed, message = check(json.loads(args.metrics.read_text()), json.loads(args.baseline.read_text()),
                            params.load("evaluate").gate_tolerance)
    print(f"gate: {message}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
