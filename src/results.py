"""Results table of every evaluated run in an MLflow experiment, as markdown (pandas).

    python -m src.results                               # experiment `colorizer`, prints the table
    python -m src.results --out experiments/results.md  # and writes it

Columns come from the evaluate stage's metrics: the extra folder (e.g. cbsd68) where present, else the test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from src.files import write_text

COLUMNS = {
    "tags.mlflow.runName": "run",
    "params.model.arch": "arch",
    "params.model.target": "target",
    "params.loss": "loss",
    "params.saturation_weight": "sat_w",
    "params.epochs": "epochs",
    "metrics.epochs": "epochs_run",
    "metrics.wall_s": "train_s",
    "metrics.{set}_model_psnr": "PSNR",
    "metrics.{set}_gray_psnr": "gray PSNR",
    "metrics.{set}_constant_psnr": "const PSNR",
    "metrics.{set}_model_colourfulness": "colourful",
    "metrics.{set}_truth_colourfulness": "truth colourful",
    "metrics.{set}_model_hs_rmse": "H,S RMSE",
    "metrics.{set}_constant_hs_rmse": "const H,S RMSE",
    "metrics.{set}_model_hue_error": "hue err",
}


def table(experiment: str, evaluated_on: str = "extra") -> pd.DataFrame:
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="metrics.eval_rmse > 0")
    if runs.empty:
        return runs
    columns = {k.format(set=evaluated_on): v for k, v in COLUMNS.items()}
    present = [c for c in columns if c in runs]
    out = runs[present].rename(columns=columns)
    out.insert(1, "started", runs["start_time"].dt.strftime("%Y-%m-%d %H:%M"))
    if "PSNR" in out and "gray PSNR" in out:
        out["PSNR - gray"] = out["PSNR"] - out["gray PSNR"]
    if "colourful" in out and "truth colourful" in out:
        out["colourful / truth"] = out["colourful"] / out["truth colourful"]
    return out.sort_values("started").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="colorizer")
    parser.add_argument("--set", default="extra", choices=["extra", "test"], help="which evaluated set to show")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    import mlflow

    from src import tracking

    mlflow.set_tracking_uri(tracking.resolve_uri())
    result = table(args.experiment, args.set)
    if result.empty:
        print(f"no evaluated runs in experiment {args.experiment!r}", file=sys.stderr)
        return 1
    markdown = result.to_markdown(index=False, floatfmt=".3f")
    print(markdown)
    if args.out:
        write_text(args.out, markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
