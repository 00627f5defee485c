"""Colourise black-and-white photos at their full resolution.

    python -m src.colorize old_photos/ scan.jpg --out coloured/
    python -m src.colorize photos/ --out out/ --model models:/colorizer@champion

INPUT: image files and folders (searched recursively); colour photos are converted to gray first.
Writes OUT/<stem>.png. The chroma is predicted at the model's resolution, upsampled, and combined with each
photo's full-resolution gray. Unreadable files are reported and skipped; the exit status is non-zero only when
no photo could be coloured.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src import images
from src.files import atomic_path
from src.paths import MODEL_DIR

log = logging.getLogger(__name__)
MAX_PIXELS = 100_000_000


def find_inputs(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            log.warning("%s: no such file or folder", path)
    return found


def load_model(spec: str):
    """A model folder (the pipeline's models/ by default) or an MLflow model URI (runs:/, models:/...)."""
    if "://" in spec or spec.startswith(("models:/", "runs:/")):
        import mlflow

        from src import tracking

        mlflow.set_tracking_uri(tracking.resolve_uri())
        return mlflow.pyfunc.load_model(spec), True
    from src.predict import load

    return load(spec), False


def output_names(files: list[Path]) -> dict[Path, str]:
    """<stem>.png, with a numeric suffix where two inputs share a stem."""
    names, used = {}, set()
    for f in files:
        name, n = f"{f.stem}.png", 1
        while name in used:
            name, n = f"{f.stem}-{n}.png", n + 1
        used.add(name)
        names[f] = name
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", default=str(MODEL_DIR), help="model folder or MLflow URI (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="photos per batch (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    files = find_inputs(args.inputs)
    if not files:
        log.error("no input files")
        return 1
    try:
        model, is_pyfunc = load_model(args.model)
    except (FileNotFoundError, OSError) as exc:
        log.error("cannot load model %s: %s", args.model, exc)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    names = output_names(files)
    done = 0
    with tqdm(total=len(files), desc="colorize", unit="photo") as bar:
        for start in range(0, len(files), args.batch_size):
            batch, grays = [], []
            for f in files[start : start + args.batch_size]:
                try:
                    bgr = images.read(f, MAX_PIXELS).bgr
                except images.Skip as skip:
                    log.warning("%s: skipped (%s)", f, skip)
                    bar.update()
                    continue
                batch.append(f)
                grays.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
            for f, bgr in zip(batch, colorize(model, is_pyfunc, grays)):
                with atomic_path(args.out / names[f]) as tmp:
                    cv2.imwrite(str(tmp), bgr)
                done += 1
                bar.update()
    log.info("coloured %d of %d files into %s", done, len(files), args.out)
    return 0 if done else 1


def colorize(model, is_pyfunc: bool, grays: list[np.ndarray]) -> list[np.ndarray]:
    """BGR results for gray images of any sizes."""
    if not grays:
        return []
    if not is_pyfunc:
        return model.colorize(grays)
    # the pyfunc takes one size per request
    return [cv2.cvtColor(model.predict(g[None])[0], cv2.COLOR_RGB2BGR) for g in grays]


if __name__ == "__main__":
    sys.exit(main())
