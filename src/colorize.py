"""Colourise black-and-white photos and films at their full resolution.

    python -m src.colorize old_photos/ scan.jpg --out coloured/
    python -m src.colorize film.mp4 --out coloured/                   # a video: coloured/film.mp4
    python -m src.colorize photos/ --out out/ --model models           # the pipeline's own model
    python -m src.colorize photos/ --out out/ --model models:/colorizer@champion
    python -m src.colorize scan.jpg --out out/ --hints hints.json    # a hint model, told some colours

INPUT: image and video files and folders (searched recursively); colour input is converted to gray first.
Writes OUT/<stem>.png for a photo, OUT/<stem>.mp4 for a video (H.264; the same frames, size and rate; the input's
audio kept; colour carried along the motion within each shot, docs/video.md). The chroma is predicted at the
model's resolution, upsampled, and combined with each frame's full-resolution gray. Each output says in its
metadata which model coloured it and that its colours were predicted by a machine-learning model; a PNG keeps the
input's EXIF (date, camera).
MODEL: by default the released model (release/), or the registry's champion if it beat the release on the same
images; the first line says which and why. A photo that cannot be read or written, or whose hints are wrong, is
reported and skipped; the exit status is non-zero only when no photo could be coloured (2: a bad command line,
found before any work).
HINTS (a hint model, train.model.hints): JSON, [{"x": 120, "y": 80, "colour": "#c03020"}, ...] with x, y in
pixels of the photo, for a single INPUT; or {"scan.jpg": [...], ...} by file name for several.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from src.core.files import atomic_path
from src.data import hints, images
from src.serving import stamp
from src.video import film, streams

log = logging.getLogger(__name__)
MAX_PIXELS = 100_000_000
MAX_FRAME_PIXELS = 3840 * 2160  # a video's frames: 4K at most
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
    """<stem>.png (<stem>.mp4 for a video), long stems shortened, a numeric suffix where two inputs share a name."""
    names, used = {}, set()
    for f in files:
        stem = f.stem.encode()[:MAX_STEM].decode(errors="ignore")
        suffix = ".mp4" if streams.is_video(f) else ".png"
        name, n = f"{stem}{suffix}", 1
        while name in used:
            name, n = f"{stem}-{n}{suffix}", n + 1
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
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image or video files, or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", help="release, a model folder (e.g. models), a release .npz or an MLflow URI "
                                        "(default: the released model, or the registry's champion if it beats it)")
    parser.add_argument("--runtime", choices=("onnx", "keras"),
                        help="how the released model runs: onnx (onnxruntime, no TensorFlow; the default where it is "
                             "installed) or keras")
    parser.add_argument("--batch-size", type=positive, default=8, help="photos per batch (default: %(default)s)")
    parser.add_argument("--hints", type=Path, metavar="FILE",
                        help='colour hints, JSON: [{"x": 120, "y": 80, "colour": "#c03020"}] for one photo '
                             '(x, y in its pixels), or {"name.jpg": [...]} by file name (needs a hint model)')
    parser.add_argument("--video", choices=film.METHODS, default="temporal",
                        help="how a video's frames are coloured: temporal (colour carried along the motion, reset at "
                             "shot cuts) or frames (each on its own: flickers) (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_out(parser, args.out)
    files = find_inputs(args.inputs)
    if not files:
        log.error("no input files")
        return 1
    given = read_hints(parser, args.hints, files) if args.hints else {}

    from src.serving import choice

    try:
        chosen = choice.choose(args.model, args.runtime)
    except (FileNotFoundError, OSError, ValueError) as exc:  # one line, no traceback
        log.error("cannot load model %s: %s", args.model or "release", exc)
        return 1
    log.info(chosen.line())
    if given and not chosen.colorizer.spec.hints:
        log.error("%s takes no hints: colour without --hints, or use a hint model (train.model.hints)", chosen.name)
        return 1
    names = output_names(files)
    photos = [f for f in files if not streams.is_video(f)]
    videos = [f for f in files if streams.is_video(f)]
    if given and any(f in given for f in videos):
        log.error("hints are for photos: a video takes none")
        return 1
    done = colour_photos(photos, chosen, given, args, names)
    for f in videos:
        done += colour_video(f, chosen, args.out / names[f], args.video)
    log.info("coloured %d of %d files into %s", done, len(files), args.out)
    return 0 if done else 1


def colour_photos(files: list[Path], chosen, given: dict[Path, list], args, names: dict[Path, str]) -> int:
    if not files:
        return 0
    target = chosen.colorizer.spec.target
    done = 0
    with tqdm(total=len(files), desc="colorize", unit="photo") as bar:
        for start in range(0, len(files), args.batch_size):
            batch, grays, batch_hints = [], [], []
            for f in files[start : start + args.batch_size]:
                try:
                    bgr = images.read(f, MAX_PIXELS).bgr
                    photo_hints = hints.parse(given.get(f, []), bgr.shape[1], bgr.shape[0], target)
                except images.Skip as skip:
                    log.warning("%s: skipped (%s)", f, skip)
                    bar.update()
                    continue
                except ValueError as exc:
                    log.error("%s: skipped (%s: %s)", f, args.hints, exc)
                    bar.update()
                    continue
                batch.append(f)
                grays.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
                batch_hints.append(photo_hints)
            coloured = chosen.colorizer.colorize(grays, given=batch_hints) if grays else []
            for f, bgr, photo_hints in zip(batch, coloured, batch_hints):
                info = stamp.fields(chosen.name, chosen.version, hints.described(photo_hints))
                done += write(args.out / names[f], bgr, info, f)
                bar.update()
    return done


def colour_video(path: Path, chosen, out: Path, method: str) -> bool:
    """Colour one video into `out` (atomically); a video that cannot be coloured is logged as a skip (False)."""
    try:
        if out.is_dir():
            raise IsADirectoryError(21, "a folder has that name")
        clip = streams.scan(path, MAX_FRAME_PIXELS)
        info = stamp.video_fields(stamp.fields(chosen.name, chosen.version))
        with tqdm(total=clip.frames, desc=path.name[:30], unit="frame") as bar:
            film.colour_clip(chosen.colorizer, clip, out, info, method, bar.update)
    except streams.BadVideo as exc:
        log.warning("%s: skipped (%s)", path, exc)
        return False
    except OSError as exc:
        log.warning("%s: skipped (cannot write %s: %s)", path, out, exc.strerror or exc)
        return False
    return True


def read_hints(parser: argparse.ArgumentParser, path: Path, files: list[Path]) -> dict[Path, list]:
    """--hints FILE -> each input's raw hint list (checked against its photo later); a bad file is a usage error."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        parser.error(f"--hints {path}: {exc.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        parser.error(f"--hints {path} is not valid JSON: {exc}")
    if isinstance(raw, list):
        if len(files) != 1:
            parser.error(f"--hints {path} is one list of hints, for one photo, but {len(files)} inputs were given: "
                         'use {"name.jpg": [...], ...}')
        return {files[0]: raw}
    if not isinstance(raw, dict):
        parser.error(f'--hints {path} must be a list of hints or {{"name.jpg": [...]}}')
    by_name = {}
    for f in files:
        matches = [key for key in (str(f), f.name) if key in raw]
        if matches:
            by_name[f] = raw[matches[0]]
    unknown = set(raw) - {key for f in files for key in (str(f), f.name)}
    if unknown:
        parser.error(f"--hints {path} names photos that are not inputs: {sorted(unknown)}")
    return by_name


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
