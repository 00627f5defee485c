"""User-guided colorization: PSNR against the number of colour hints, beside painting the hints on (Zhang et al. 2017).

    python -m benchmarks.hints                                    # the released model on ../shared/data/cbsd68
    python -m benchmarks.hints --model models --folder ../shared/data/cbsd68 --counts 0 1 2 5 10 20

Every photo of the folder at 256x256 (the evaluate protocol). For each count n, n points drawn uniformly with a
fixed seed, each hint the photo's true mean colour over the 5x5 px patch around it (src/data/hints.py from_truth),
given to the model; the naive baseline paints each hint's colour, at the photo's luma, over that same patch of
the model's automatic result. Writes experiments/benchmarks/hints.json and the plot docs/hints_psnr.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmarks.common import RESULTS, save
from src.core.paths import ROOT
from src.data import hints, metrics
from src.serving.choice import choose
from src.stages.evaluate import folder_photos

PLOT = ROOT / "docs" / "hints_psnr.png"


def measure(colorizer, photos: list[tuple[str, np.ndarray]], counts: list[int], seed: int) -> pd.DataFrame:
    """One row per photo and count: the hint model's PSNR and the naive baseline's."""
    from src.data import colour

    rows = []
    target = colorizer.spec.target
    for name, truth in tqdm(photos, desc="hints", unit="photo"):
        gray = colour.luma(truth)
        (auto,) = colorizer.colorize([gray])
        for n in counts:
            given = hints.from_truth(truth, n, np.random.default_rng([seed, n, len(rows)]), target)
            (guided,) = colorizer.colorize([gray], given=[given]) if n else (auto,)
            painted = hints.paint(auto, given, target, hints.HALF)
            rows.append({"photo": name, "hints": n, "model": metrics.psnr(guided, truth),
                         "painted": metrics.psnr(painted, truth)})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.plot(table.index, table["model"], "o-", label=f"hint model ({label})")
    ax.plot(table.index, table["painted"], "s--", label="automatic + hints painted on")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(table.index, [str(n) for n in table.index])
    ax.set_xlabel("hints from the truth (points)")
    ax.set_ylabel("PSNR, dB (CBSD68, 256x256)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="as python -m src.colorize --model takes it (default: the release)")
    parser.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "cbsd68")
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 1, 2, 5, 10, 20])
    parser.add_argument("--size", type=int, default=256, help="photos resized to size x size (default: 256)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"--folder {args.folder} does not exist")
    try:
        chosen = choose(args.model)
    except (FileNotFoundError, OSError, ValueError) as exc:  # ReleaseError too: one line, as src.colorize says it
        parser.error(f"cannot load model {args.model or 'release'}: {exc}")
    if not chosen.colorizer.spec.hints:
        parser.error(f"{chosen.name} takes no hints (train.model.hints: false)")
    print(chosen.line(), file=sys.stderr)
    rows = measure(chosen.colorizer, list(folder_photos(args.folder, args.size)), args.counts, args.seed)
    table = rows.groupby("hints")[["model", "painted"]].mean()
    table["model - painted"] = table["model"] - table["painted"]
    table["model - no hints"] = table["model"] - table.loc[0, "model"] if 0 in table.index else np.nan
    print(table.round(3).to_string())
    save("hints", {"model": chosen.name, "version": chosen.version, "folder": str(args.folder), "size": args.size,
                   "seed": args.seed, "photos": int(rows["photo"].nunique()),
                   "psnr": {int(n): {k: round(float(v), 4) for k, v in row.items()} for n, row in table.iterrows()}})
    plot(table, chosen.name, PLOT)
    print(f"wrote {RESULTS / 'hints.json'} and {PLOT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
