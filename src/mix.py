"""Mix two automatic releases weight by weight, the share chosen on the validation split, and pack the mix.

    python -m src.mix release/colorizer-lite0-v5-auto.npz release/colorizer-lite0-v5-colour.npz   # the table, a pick
    python -m src.mix A.npz B.npz --name colorizer-lite0-v5-base        # ... and pack the pick beside A
    python -m src.mix A.npz B.npz --shares 0.5 --name NAME              # one share, no choice

B fine-tuned from A (`train.init_from`) lies on one path with it, so each weight (1 - s) x A's + s x B's is a model
too (WiSE-FT, Wortsman et al. 2022): here A is the faithful model and B the colourful one. Each share is scored on
the workspace's validation split (data/shards) at the models' own size and temperature, as `python -m
src.calibrate` scores a setting; share 0 (A itself) is always scored. The pick is the largest share that keeps A's
PSNR gain over gray and its hue error: B's colour bought at no cost there. Nothing else is read.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from src.core.paths import SHARD_DIR
from src.model import release

log = logging.getLogger(__name__)
SHARES = (0.3, 0.5, 0.7)
PSNR, COLOUR, HUE = "PSNR - gray", "colourful / truth", "hue err / constant's"


def score(first: Path, second: Path, shares, shards: Path = SHARD_DIR) -> pd.DataFrame:
    """A row per share (0 first): validation PSNR gain over gray, colourfulness share, hue error share."""
    from src import calibrate

    rows = []
    for share in sorted({0.0, *shares}):
        colorizer = release.built(*release.mixed(first, second, share))
        row = calibrate.sweep(colorizer, shards, temperatures=(colorizer.spec.temperature,),
                              boosts=(colorizer.spec.boost,), sizes=[colorizer.image_size]).iloc[0]
        rows.append({"share": share, PSNR: row[PSNR], COLOUR: row[COLOUR], HUE: row[HUE]})
        log.info("share %.2f: %+.3f dB over gray, colourfulness %.3f of the truth's, hue error %.3f of constant "
                 "colour's", share, row[PSNR], row[COLOUR], row[HUE])
    return pd.DataFrame(rows)


def pick(table: pd.DataFrame) -> float:
    """The largest share at least as good as share 0 in PSNR gain and hue error (0 if none is)."""
    first = table[table["share"] == 0.0].iloc[0]
    kept = table[(table[PSNR] >= first[PSNR]) & (table[HUE] <= first[HUE])]
    return float(kept["share"].max())


def pack(first: Path, second: Path, share: float, name: str) -> Path:
    """NAME.npz beside the first file (release/ for releases): the mix, its meta naming both files and the share."""
    meta, stored = release.mixed(first, second, share)
    a, b = release.read_meta(first)["trained"], meta["trained"]
    trained = b | {"train_s": round(a["train_s"] + b["train_s"], 1)}  # B started from A: the compute of both
    mix = {"share": share, "of": [{"file": f.name, "sha256": release.verify(f)} for f in (first, second)]}
    weights = first.parent / f"{name}.npz"
    digest = release.write(release.built(meta, stored).model, {"name": name, "image_size": meta["image_size"],
                                                               "trained": trained, "train": meta["train"],
                                                               "mixed": mix}, weights=weights)
    log.info("packed %s (%.1f MiB, SHA-256 %s): %.2f x %s + %.2f x %s", weights, weights.stat().st_size / 2**20,
             digest, 1 - share, first.name, share, second.name)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="the release B was fine-tuned from (share 0)")
    parser.add_argument("second", type=Path, help="the fine-tuned release (share 1)")
    parser.add_argument("--shares", type=float, nargs="+", default=SHARES, metavar="S",
                        help="B's shares to score (default: %(default)s); one share is packed without scoring")
    parser.add_argument("--shards", type=Path, default=SHARD_DIR, help="(default: %(default)s)")
    parser.add_argument("--name", help="pack the pick as NAME.npz beside FIRST, e.g. in release/ (with its .sha256)")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if any(not 0.0 <= s <= 1.0 for s in args.shares):
        parser.error("--shares must lie in 0..1")
    try:
        for f in (args.first, args.second):
            release.verify(f)
        if len(args.shares) == 1 and args.name:
            share = args.shares[0]
        else:
            if not (args.shards / "records.csv").exists():
                parser.error(f"{args.shards} holds no shards: choosing a share needs the validation split "
                             "(dvc repro shard)")
            table = score(args.first, args.second, args.shares, args.shards)
            share = pick(table)
            markdown = table.to_markdown(index=False, floatfmt=".3f")
            print(markdown + f"\n\npick: share {share:g} of {args.second.name}")
            if args.out:
                from src.core.files import write_text

                write_text(args.out, markdown + "\n")
        if args.name:
            pack(args.first, args.second, share, args.name)
    except release.ReleaseError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
