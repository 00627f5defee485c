"""Choose a bins model's inference settings (size, temperature, colour boost) on the validation split.

    python -m src.calibrate                                   # models/ and data/shards of the workspace
    python -m src.calibrate --out experiments/calibration.md  # also write the table

For each setting (sizes from the training size to 10/7 of it: a finer chroma grid, objects as large as in the
rescaled training crops): PSNR above the gray baseline, colourfulness as a share of the truth's, and the
saturation-weighted hue error as a share of the constant-colour baseline's, averaged over the validation photos.
The pick maximises the worst of the three ratios to issue 10's targets (PSNR gain / 1.0 dB, colourfulness share /
0.65, 0.80 / hue share), so none is bought with another. Apply it with
`--set train.model.inference_size=S --set train.model.temperature=T --set train.model.colour_boost=B`; only the
validation split is read.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.core.files import write_text
from src.core.paths import MODEL_DIR, SHARD_DIR
from src.data import colour, metrics

if TYPE_CHECKING:
    from src.model.predict import Colorizer

TEMPERATURES = (1.0, 0.85, 0.7, 0.5, 0.38)
BOOSTS = (0.0, 0.25, 0.5, 1.0, 4.0, 16.0, 64.0)  # fine steps first: a model with PSNR to spare needs a small one
SIZE_STEPS = (1, 8 / 7, 9 / 7, 10 / 7)  # x the training size, rounded to the encoders' stride of 32: 224 -> 224..320
TARGET_GAIN_DB, TARGET_SHARE, TARGET_HUE_SHARE = 1.0, 0.65, 0.80


def sizes_for(image_size: int) -> list[int]:
    return sorted({max(32, round(image_size * step / 32) * 32) for step in SIZE_STEPS})


def sweep(base: Colorizer, shards_dir: Path = SHARD_DIR, temperatures=TEMPERATURES, boosts=BOOSTS, sizes=None,
          split: str = "val", batch_size: int = 16) -> pd.DataFrame:
    """One row per (size, temperature, boost) of a bins model: mean PSNR gain over gray, colourfulness share, hue
    error share and the worst ratio to the targets."""
    from src.data.shards import ShardSet
    from src.stages.evaluate import baselines, train_mean_colour

    shards = ShardSet.open(shards_dir)
    mean_hs = train_mean_colour(shards)
    sizes = sizes or sizes_for(shards.image_size)  # the training photos' size, not the model's current one
    decodings = list(itertools.product(temperatures, boosts))
    # Streamed a batch at a time, each batch run once per size and decoded once per setting: per-image sums of
    # (PSNR - gray's, colourfulness, hue error) per setting, and of (constant's hue error, truth's colourfulness).
    sums, base_sums, count = np.zeros((len(sizes), len(decodings), 3)), np.zeros(2), 0
    with tqdm(total=len(sizes) * shards.count(split), desc="calibrate", unit="img") as bar:
        for records in shards.batches(split, batch_size):
            truth = colour.record_to_bgr(records)
            baseline = [baselines(t, mean_hs) for t in truth]
            gray_psnr = np.array([metrics.psnr(b["gray"], t) for b, t in zip(baseline, truth)])
            base_sums += [sum(metrics.hue_error(b["constant"], t) for b, t in zip(baseline, truth)),
                          sum(metrics.colourfulness(t) for t in truth)]
            count += len(records)
            for s, size in enumerate(sizes):
                at_size = dataclasses.replace(base, image_size=size)
                scores = at_size.scores(at_size.records_input(records))  # once per size: the rest only decodes
                for d, (temperature, boost) in enumerate(decodings):
                    spec = dataclasses.replace(base.spec, temperature=temperature, boost=boost)
                    out = dataclasses.replace(at_size, spec=spec).colorize_records(records, scores=scores)
                    sums[s, d] += [np.sum([metrics.psnr(o, t) for o, t in zip(out, truth)] - gray_psnr),
                                   sum(metrics.colourfulness(o) for o in out),
                                   sum(metrics.hue_error(o, t) for o, t in zip(out, truth))]
                bar.update(len(records))
    constant_hue, truth_colour = base_sums / count
    rows = []
    settings = itertools.product(sizes, decodings)
    for (size, (temperature, boost)), (gain, colourful, hue) in zip(settings, (sums / count).reshape(-1, 3)):
        share, hue_share = colourful / truth_colour, hue / constant_hue
        rows.append({"inference_size": size, "temperature": temperature, "colour_boost": boost,
                     "PSNR - gray": gain, "colourful / truth": share, "hue err / constant's": hue_share,
                     "worst target ratio": min(gain / TARGET_GAIN_DB, share / TARGET_SHARE, TARGET_HUE_SHARE / hue_share)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=MODEL_DIR)
    parser.add_argument("--shards", type=Path, default=SHARD_DIR)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--temperatures", type=float, nargs="+", default=TEMPERATURES, metavar="T")
    parser.add_argument("--boosts", type=float, nargs="+", default=BOOSTS, metavar="B")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="PX",
                        help="inference sizes (default: 1 to 10/7 of the training photos' size)")
    args = parser.parse_args(argv)
    from src.model.predict import load

    base = load(args.models)
    if not colour.is_bins(base.spec.target):
        parser.error(f"{args.models} holds a {base.spec.target!r} model: calibration is for the bins target")
    table = sweep(base, args.shards, args.temperatures, args.boosts, args.sizes)
    best = table.loc[table["worst target ratio"].idxmax()]
    markdown = table.to_markdown(index=False, floatfmt=("g",) + (".3f",) * (table.shape[1] - 1))  # sizes as integers
    print(markdown)
    print(f"\npick: --set train.model.inference_size={best['inference_size']:g} "
          f"--set train.model.temperature={best['temperature']:g} "
          f"--set train.model.colour_boost={best['colour_boost']:g}")
    if args.out:
        write_text(args.out, markdown + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
