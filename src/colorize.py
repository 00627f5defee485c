"""Colourise black-and-white photos at their full resolution.

    python -m src.colorize old_photos/ scan.jpg --out coloured/
    python -m src.colorize photos/ --out out/ --model models           # the pipeline's own model
    python -m src.colorize photos/ --out out/ --model models:/colorizer@champion

INPUT: image files and folders (searched recursively); colour photos are converted to gray first.
Writes OUT/<stem>.png. The chroma is predicted at the model's resolution, upsampled, and combined with each
photo's full-resolution gray. Each PNG says in its metadata which model coloured it, that its colours were
predicted by a machine-learning model, and keeps the input's EXIF (date, camera).
MODEL: by default the released model (release/), or the registry's champion if it beat the release on the same
images; the first line says which and why. A photo that cannot be read or written is reported and skipped; the
exit status is non-zero only when no photo could be coloured (2: a bad command line, found before any work).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src import images, stamp
from src.files import atomic_path

log = logging.getLogger(__name__)
MAX_PIXELS = 100_000_000
MAX_STEM = 200  # bytes of an output name's stem: the atomic write's temporary name adds ~20 to it (NAME_MAX 255)


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


def output_names(files: list[Path]) -> dict[Path, str]:
    """<stem>.png, long stems shortened, with a numeric suffix where two inputs share a stem."""
    names, used = {}, set()
    for f in files:
        stem = f.stem.encode()[:MAX_STEM].decode(errors="ignore")
        name, n = f"{stem}.png", 1
        while name in used:
            name, n = f"{stem}-{n}.png", n + 1
        used.add(name)
        names[f] = name
    return names


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Refuse an --out that cannot hold the results, before the model loads."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {out} cannot be created: {exc.strerror}")
    if not os.access(out, os.W_OK | os.X_OK):
        parser.error(f"--out {out} is not writable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", help="release, a model folder (e.g. models), a release .npz or an MLflow URI "
                                        "(default: the released model, or the registry's champion if it beats it)")
    parser.add_argument("--batch-size", type=positive, default=8, help="photos per batch (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_out(parser, args.out)
    files = find_inputs(args.inputs)
    if not files:
        log.error("no input files")
        return 1

    from mlflow.exceptions import MlflowException

    from src import choice

    try:
        chosen = choice.choose(args.model)
    except (FileNotFoundError, OSError, ValueError, MlflowException) as exc:  # one line, no traceback
        log.error("cannot load model %s: %s", args.model or "release", exc)
        return 1
    log.info(chosen.line())
    info = stamp.fields(chosen.name, chosen.version)
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
            for f, bgr in zip(batch, chosen.colorizer.colorize(grays) if grays else []):
                done += write(args.out / names[f], bgr, info, f)
                bar.update()
    log.info("coloured %d of %d files into %s", done, len(files), args.out)
    return 0 if done else 1


def write(path: Path, bgr: np.ndarray, info: dict[str, str], source: Path) -> bool:
    """Write one result atomically; a failure is logged as a skip (False), never the end of the run."""
    try:
        if path.is_dir():  # atomic_path would replace it: never delete a user's folder
            raise IsADirectoryError(21, "a folder has that name")
        data = stamp.png_bytes(bgr, info, stamp.input_exif(source))
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        log.warning("%s: skipped (cannot write %s: %s)", source, path, exc.strerror or exc)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
