"""Stage `evaluate`: score the model beside the gray and constant-colour baselines on the same images.

    python -m src.stages.evaluate            # uses params.yaml: evaluate.*

Sets: the test split (at shard resolution) and, if evaluate.extra_folder is set, every photo there resized to
evaluate.image_size (the published protocol: 256x256, no crop; the model predicts chroma at its own resolution and
keeps each photo's full-resolution luma). Metrics (../shared/docs/colour.md): RGB RMSE (the headline eval_rmse) and
PSNR, the original design's H,S RMSE, saturation-weighted hue error, colourfulness of outputs and truth.
Writes reports/eval.json (a DVC metric), reports/eval_images.csv and reports/eval_samples.png; logs the same
into the training run in MLflow, registers the model and moves the `champion` alias only if it is better.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from src.core import params
from src.core.entry import stage_main
from src.core.files import atomic_path, write_json
from src.core.params import EvaluateParams, TrainParams
from src.core.paths import EVAL_IMAGES, EVAL_METRICS, EVAL_SAMPLES, MODEL_DIR, SHARD_DIR
from src.data import colour, hints, images, metrics
from src.data.shards import ShardSet, source_folder
from src.model import release
from src.model.predict import META_FILE, Colorizer, grid, load

log = logging.getLogger(__name__)
FEW_PHOTOS = 100  # below this many training photos a losing model is explained by the data, not the recipe


def train_mean_colour(shards: ShardSet) -> tuple[float, float]:
    """Mean (H, S) of the training split, one shard at a time (bounded memory)."""
    sums, count = np.zeros(2), 0
    for f in shards.files("train"):
        records = np.load(f, mmap_mode="r")
        sums += colour.record_target(np.asarray(records), "chroma").reshape(-1, 2).sum(axis=0)
        count += records.shape[0] * records.shape[1] * records.shape[2]
    hue, sat = colour.decode_target((sums / count).astype(np.float32), "chroma")
    return float(hue), float(sat)


def baselines(truth: np.ndarray, mean_hs: tuple[float, float]) -> dict[str, np.ndarray]:
    """gray: the luma replicated (no colour); constant: the training mean colour everywhere, at the photo's luma."""
    y = colour.luma(truth)
    hue, sat = np.full(y.shape, mean_hs[0], np.float32), np.full(y.shape, mean_hs[1], np.float32)
    return {"gray": cv2.cvtColor(y, cv2.COLOR_GRAY2BGR), "constant": colour.render(y, hue, sat)}


def score(names: list[str], truths: list[np.ndarray], preds: dict[str, list[np.ndarray]], mean_hs,
          set_name: str) -> list[dict]:
    """One row per image and method (each colorizer in `preds`, then gray and constant) with every metric."""
    rows = []
    for i, (name, truth) in enumerate(zip(names, truths)):
        outputs = {**{method: p[i] for method, p in preds.items()}, **baselines(truth, mean_hs)}
        truth_colourfulness = metrics.colourfulness(truth)
        for method, output in outputs.items():
            rows.append({"set": set_name, "image": name, "method": method,
                         **metrics.image_metrics(output, truth), "truth_colourfulness": truth_colourfulness})
    return rows


HINT_POINTS = 10  # a hint model is also scored with this many hints drawn from the truth (method <name>_hints10)


def predictions(colorizers: dict[str, Colorizer], truths: list[np.ndarray], first: int, batch_size: int,
                records: np.ndarray | None = None) -> dict[str, list[np.ndarray]]:
    """Each colorizer's results for these truths (from `records` when given: their own luma at shard size), and
    for hint models also with HINT_POINTS hints from the truth, drawn with a seed per image (`first` + i)."""
    preds = {m: list(c.colorize_records(records, batch_size) if records is not None else
                     c.colorize(truths, batch_size)) for m, c in colorizers.items()}
    for m, c in colorizers.items():
        if c.spec.hints:
            given = [hints.from_truth(t, HINT_POINTS, np.random.default_rng([HINT_POINTS, first + i]), c.spec.target)
                     for i, t in enumerate(truths)]
            preds[f"{m}_hints{HINT_POINTS}"] = c.colorize([colour.luma(t) for t in truths], batch_size, given=given)
    return preds


def evaluate_split(colorizers: dict[str, Colorizer], shards: ShardSet, mean_hs, batch_size: int, keep: int,
                   split: str = "test"):
    """A split, streamed a batch at a time (memory does not grow with it): (rows, the first `keep` truths, the
    first colorizer's predictions for them)."""
    index = shards.records(split)
    names = [f"{f}#{t}" for f, t in zip(index["file"], index["tile"])]
    rows, truths, preds, done = [], [], [], 0
    with tqdm(total=shards.count(split), desc=f"evaluate {split}", unit="img") as bar:
        for records in shards.batches(split, batch_size):
            truth = list(colour.record_to_bgr(records))
            pred = predictions(colorizers, truth, done, batch_size, records)
            rows += score(names[done : done + len(records)], truth, pred, mean_hs, split)
            truths += truth[: keep - len(truths)]
            preds += next(iter(pred.values()))[: keep - len(preds)]
            done += len(records)
            bar.update(len(records))
    return rows, truths, preds


def folder_photos(folder: Path, size: int) -> Iterator[tuple[str, np.ndarray]]:
    """(name, photo resized to size x size, no crop) for every decodable colour photo of a folder, one at a time;
    others are logged and skipped."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            bgr = images.read(path, 10**9).bgr
        except images.Skip as skip:
            log.warning("evaluate: skipping %s (%s)", path, skip)
            continue
        yield path.relative_to(folder).as_posix(), cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)


def evaluate_folder(colorizers: dict[str, Colorizer], folder: Path, size: int, mean_hs, batch_size: int
                    ) -> list[dict]:
    """Every photo of the folder, a batch at a time."""
    rows = []
    photos = folder_photos(folder, size)
    with tqdm(desc=f"evaluate {folder.name}", unit="img") as bar:
        while batch := list(itertools.islice(photos, batch_size)):
            names, truths = zip(*batch)
            preds = predictions(colorizers, list(truths), bar.n, batch_size)
            rows += score(list(names), list(truths), preds, mean_hs, "extra")
            bar.update(len(batch))
    if not rows:
        raise RuntimeError(f"evaluate.extra_folder {folder} holds no readable photo")
    return rows


def summarise(table: pd.DataFrame, by: str = "set") -> dict:
    """Per set (or other column): mean of every metric per method, the truth's colourfulness and the image count."""
    out = {}
    for set_name, rows in table.groupby(by, sort=False):
        means = rows.groupby("method", sort=False)[["rmse", "psnr", "hs_rmse", "hue_error", "colourfulness"]].mean()
        out[set_name] = {method: {k: round(float(v), 4) for k, v in values.items()} for method, values in means.iterrows()}
        out[set_name]["truth_colourfulness"] = round(float(rows["truth_colourfulness"].mean()), 4)
        out[set_name]["images"] = int(rows["image"].nunique())
    return out


def by_source(table: pd.DataFrame) -> dict:
    """The test split summarised per training folder (data/raw/<folder>/...; "." for files at its top): where a
    model gains and where it does not."""
    test = table[table["set"] == "test"]
    return summarise(test.assign(source=source_folder(test["image"])), by="source")


def run(p: EvaluateParams, model_dir: Path = MODEL_DIR, shards_dir: Path = SHARD_DIR, out_metrics: Path = EVAL_METRICS,
        out_images: Path = EVAL_IMAGES, out_samples: Path = EVAL_SAMPLES) -> dict:
    """Evaluate, write the reports; returns the metrics dict (also written to `out_metrics`)."""
    # the release is the yardstick of the automatic colours: its hint path is not scored (a third of evaluate's time)
    colorizers = {"model": load(model_dir), **({"release": release.load().automatic()} if p.compare_release else {})}
    shards = ShardSet.open(shards_dir)
    mean_hs = train_mean_colour(shards)
    rows, truths, preds = evaluate_split(colorizers, shards, mean_hs, p.batch_size, keep=p.samples)
    if p.extra_folder:
        rows += evaluate_folder(colorizers, Path(p.extra_folder), p.image_size, mean_hs, p.batch_size)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    result = {"eval_rmse": summary["test"]["model"]["rmse"], "eval_psnr": summary["test"]["model"]["psnr"],
              "train_mean_hue": round(mean_hs[0], 3), "train_mean_saturation": round(mean_hs[1], 3), **summary,
              "test_by_source": by_source(table)}
    with atomic_path(out_images) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    k = min(p.samples, len(truths))
    shown = [baselines(t, mean_hs) for t in truths[:k]]
    picture = grid([np.stack([b["gray"] for b in shown]), np.stack([b["constant"] for b in shown]),
                    np.stack(preds[:k]), np.stack(truths[:k])], scale=2)  # gray | constant | model | truth
    with atomic_path(out_samples) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    write_json(out_metrics, result)
    for set_name in summary:
        s = summary[set_name]
        log.info("%s (%d images): PSNR model %.2f dB, gray %.2f dB, constant %.2f dB; RMSE model %.2f; "
                 "colourfulness model %.1f vs truth %.1f", set_name, s["images"], s["model"]["psnr"],
                 s["gray"]["psnr"], s["constant"]["psnr"], s["model"]["rmse"], s["model"]["colourfulness"],
                 s["truth_colourfulness"])
        if f"model_hints{HINT_POINTS}" in s:
            log.info("%s with %d hints from the truth: PSNR %.2f dB", set_name, HINT_POINTS,
                     s[f"model_hints{HINT_POINTS}"]["psnr"])
    log.info(verdict(summary["test"], shards.manifest["splits"]["train"]["photos"]))
    return result


def verdict(s: dict, train_photos: int) -> str:
    """One closing line: the model against both baselines (and the released model, when it was scored) and, when it
    loses, why and what to run instead."""
    gray, const = s["model"]["psnr"] - s["gray"]["psnr"], s["model"]["psnr"] - s["constant"]["psnr"]
    line = f"verdict: model PSNR {gray:+.2f} dB vs gray, {const:+.2f} dB vs constant colour on the test split"
    line += ": better than both baselines" if gray > 0 and const > 0 else ": NOT better than both baselines"
    if "release" in s:
        line += (f"; the released model ({release.NAME}) {s['release']['psnr'] - s['gray']['psnr']:+.2f} dB vs gray, "
                 f"so this model is {s['model']['psnr'] - s['release']['psnr']:+.2f} dB from it")
    if (gray > 0 and const > 0) or train_photos >= FEW_PHOTOS:
        return line
    return (line + f". It learnt from {train_photos} training photos, too few to colour anything; train on real "
            "photos with download.source: folder (a folder of your colour photos) or "
            "`python -m src.profile experiments/recipe.yaml --exp-run`")


def flat_metrics(result: dict) -> dict[str, float]:
    """{'eval_rmse': .., 'test_model_psnr': .., 'extra_gray_rmse': ..} for MLflow."""
    flat = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    for set_name in ("test", "extra"):
        for method, values in result.get(set_name, {}).items():
            if isinstance(values, dict):
                flat.update({f"{set_name}_{method}_{k}": v for k, v in values.items()})
            else:
                flat[f"{set_name}_{method}"] = values
    return flat


def track(p: EvaluateParams, result: dict, where: TrainParams, model_dir: Path = MODEL_DIR,
          shards_dir: Path = SHARD_DIR, reports: tuple[Path, ...] = (EVAL_METRICS, EVAL_IMAGES, EVAL_SAMPLES)
          ) -> dict | None:
    """Log the evaluation into the training run; register the model and move `champion` if it is better.

    The store is `where`'s (train.tracking_uri or $MLFLOW_TRACKING_URI), never one named in models/: a tampered
    models/ folder from a shared remote must not redirect the results."""
    import mlflow

    from src.serving import pyfunc
    from src.training import registry, tracking

    meta = json.loads((model_dir / META_FILE).read_text())
    tracking.connect(tracking.resolve_uri(where.tracking_uri), where.experiment)
    records = ShardSet.open(shards_dir).load("test")
    gray = records[..., colour.Y]
    truth_rgb = colour.record_to_bgr(records)[..., ::-1]
    with mlflow.start_run(run_id=meta["mlflow_run_id"]):
        mlflow.log_metrics(flat_metrics(result))
        for path in reports:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        if not p.register_as:
            return None
        info = pyfunc.log(model_dir, gray[:1])
    version = mlflow.register_model(info.model_uri, p.register_as).version
    test = result["test"]
    if "release" in test:  # src.serving.choice serves this version instead of the release only if it beats it here
        registry.tag_against_release(p.register_as, version, test["model"]["psnr"], test["release"]["psnr"])
    return registry.promote_if_better(p.register_as, version, gray, truth_rgb, margin_db=p.champion_margin_db,
                                      baselines={name: test[name]["psnr"] for name in ("gray", "constant")})


def main() -> None:
    stage_main(__doc__, "evaluate", lambda p: track(p, run(p), params.load_or_exit("train")))


if __name__ == "__main__":
    main()
