"""Results table of every evaluated run in an MLflow experiment, as markdown (pandas).

    python -m src.results                               # experiment `colorizer`, prints the table
    python -m src.results --out table.md                # and writes it

Columns come from the evaluate stage's metrics: the extra folder (e.g. cbsd68) where present, else the test split.
experiments/results.md is the project's log of these rows across sessions (each machine's MLflow store is its own).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from src.core.files import write_text

COLUMNS = {
    "tags.mlflow.runName": "run",
    "tags.mlflow.note.content": "note",  # the run's description in the MLflow UI
    "params.model.arch": "arch",
    "params.model.target": "target",
    "params.model.encoder": "encoder",
    "params.encoder_trainable": "fine-tuned",
    "params.model.decoder_widths": "decoder",
    "params.model.dropout": "dropout",
    "params.rebalance": "rebalance",
    "params.model.temperature": "T",
    "params.model.colour_boost": "boost",
    "params.data.image_size": "px",
    "params.model.inference_size": "infer px",  # 0: coloured at px
    "params.crop": "crop",
    "params.loss": "loss",
    "params.saturation_weight": "sat_w",
    "params.ema": "ema",
    "params.epochs": "epochs",
    "params.steps_per_epoch": "steps",  # per epoch; 0: one pass over the training split
    "metrics.epochs": "epochs_run",
    "params.data.train_photos": "photos",
    "metrics.wall_s": "train_s",
    "metrics.train_img_per_s": "img/s",
    "metrics.best_val_rmse": "val RMSE",  # settings are chosen on validation; the evaluated set is only reported
    "metrics.{set}_model_psnr": "PSNR",
    "metrics.{set}_gray_psnr": "gray PSNR",
    "metrics.{set}_constant_psnr": "const PSNR",
    "metrics.{set}_model_colourfulness": "colourful",
    "metrics.{set}_truth_colourfulness": "truth colourful",
    "metrics.{set}_model_hs_rmse": "H,S RMSE",
    "metrics.{set}_constant_hs_rmse": "const H,S RMSE",
    "metrics.{set}_model_hue_error": "hue err",
    "metrics.{set}_constant_hue_error": "const hue err",
}


def table(experiment: str, evaluated_on: str = "extra") -> pd.DataFrame:
    import mlflow

    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="metrics.eval_rmse > 0")
    if runs.empty:
        return runs
    columns = {k.format(set=evaluated_on): v for k, v in COLUMNS.items()}
    present = [c for c in columns if c in runs]
    out = runs[present].rename(columns=columns)
    if "PSNR" in out:
        out = out[out["PSNR"].notna()]  # runs evaluated without this set
    out.insert(1, "started", runs["start_time"].dt.strftime("%Y-%m-%d %H:%M"))
    for column, default in (("ema", "0.0"), ("infer px", "0")):
        if column in out:
            out[column] = out[column].fillna(default)  # runs from before the parameter existed
    if "PSNR" in out and "gray PSNR" in out:
        out["PSNR - gray"] = out["PSNR"] - out["gray PSNR"]
    if "colourful" in out and "truth colourful" in out:
        out["colourful / truth"] = out["colourful"] / out["truth colourful"]
    if "hue err" in out and "const hue err" in out:
        out["hue err / const"] = out["hue err"] / out["const hue err"]
    return out.sort_values("started").reset_index(drop=True)


def before_after(models: list[str], photos: list[Path], out: Path, size: int = 256, runtime: str | None = None) -> None:
    """A picture for the README: one row per photo, gray | each model's colours | truth, at size x size. Each of
    `models`: as `python -m src.colorize --model` takes it, run on `runtime` as there."""
    import cv2
    import numpy as np

    from src.core.files import atomic_path
    from src.data import colour, images
    from src.model.predict import grid
    from src.serving.choice import choose

    truths = [cv2.resize(images.read(p, 10**9).bgr, (size, size), interpolation=cv2.INTER_AREA) for p in photos]
    grays = [cv2.cvtColor(colour.luma(t), cv2.COLOR_GRAY2BGR) for t in truths]
    coloured = [np.stack(choose(model, runtime).colorizer.colorize(truths)) for model in models]
    picture = grid([np.stack(grays), *coloured, np.stack(truths)], scale=1)
    with atomic_path(out) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="colorizer")
    parser.add_argument("--set", default="extra", choices=["extra", "test"], help="which evaluated set to show")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--picture", nargs="+", type=Path, metavar="PHOTO",
                        help="instead: write a gray | colourised | truth picture of these photos")
    parser.add_argument("--picture-out", type=Path, default=Path("docs/before_after.png"))
    parser.add_argument("--model", nargs="+", default=["release"],
                        help="for --picture: release, a model folder or an MLflow URI; several give a column each, in "
                             "order (default: %(default)s)")
    parser.add_argument("--runtime", choices=["onnx", "keras"],
                        help="for --picture: how releases run, as `python -m src.colorize --runtime` (default: onnx where "
                             "installed; a release file without recorded ONNX checksums needs keras)")
    args = parser.parse_args(argv)
    if args.picture:
        before_after(args.model, args.picture, args.picture_out, runtime=args.runtime)
        print(f"wrote {args.picture_out}")
        return 0
    import mlflow

    from src.training import tracking

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
