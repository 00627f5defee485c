"""Stage `hsv-split`: decode every raw file, crop/resize, store H,S targets with V and luma gray inputs.

    python -m src.stages.hsv_split            # uses params.yaml: hsv_split.*

Output data/hsv/: part-NNNNN.npy uint8 arrays (n, size, size, 4) with channels H (0..179), S, V, Y (luma), and
records.csv naming each record's source file and photo hash. Every input file gets one row in
reports/hsv_split.csv (used or skipped, with the reason); counts go to reports/hsv_split.json (a DVC metric).
Runs on all cores; memory is bounded by hsv_split.part_records whatever the number of files.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.core.entry import stage_main
from src.core.files import atomic_path, write_json
from src.core.params import HsvSplitParams
from src.core.paths import HSV_DIR, HSV_METRICS, HSV_REPORT, RAW_DIR
from src.data import images
from src.data.colour import bgr_to_record

log = logging.getLogger(__name__)
WINDOW_PER_WORKER = 4  # files in flight per worker: bounds memory and what a dying worker takes with it
THREADED_FRAMEWORKS = {"tensorflow", "torch", "jax"}


@dataclass(frozen=True)
class Result:
    row: dict
    records: np.ndarray | None  # uint8 (n, size, size, 4)


def _row(path: Path, root: Path) -> dict:
    rel = path.relative_to(root)
    # the top folder: with download.folders, the source folder the file came from
    folder = rel.parts[0] if len(rel.parts) > 1 else ""
    return {"file": rel.as_posix(), "folder": folder, "status": "skipped", "reason": "", "width": 0, "height": 0,
            "photo": "", "chroma": np.nan, "records": 0}


def process_file(path: Path, root: Path, p: HsvSplitParams) -> Result:
    """One raw file -> its records, or a skip reason. Never raises: anything unexpected is recorded."""
    row = _row(path, root)
    try:
        data = images.read_bytes(path, p.max_file_bytes)
        row["photo"] = hashlib.sha256(data).hexdigest()[:16]
        # tiles must keep at least image_size px after a reduced JPEG decode
        photo = images.decode(data, p.max_pixels, p.tile / p.image_size if p.tile else np.inf, p.image_size)
        row["width"], row["height"] = photo.width, photo.height
        if min(photo.width, photo.height) < p.min_size:
            raise images.Skip(f"too small: {photo.width}x{photo.height} below {p.min_size} px")
        if p.fit not in ("crop", "squash"):
            raise ValueError(f"hsv_split.fit must be crop or squash, got {p.fit!r}")
        if p.fit == "squash" and not p.tile:  # the 256x256 evaluation protocol resizes whole photos the same way
            tiles = [photo.bgr]
        else:
            tiles = images.square_crops(photo.bgr, p.tile // photo.scale if p.tile else 0)
        crops = np.stack([images.resize_square(c, p.image_size) for c in tiles])
        records = bgr_to_record(crops)
        row["chroma"] = round(images.check_colour(records, p.gray_threshold), 3)
        row.update(status="used", records=len(records))
        return Result(row, records)
    except images.Skip as skip:
        row["reason"] = str(skip)
    except Exception as exc:  # noqa: BLE001 - a bad file must never stop the stage
        row["reason"] = f"error: {type(exc).__name__}: {exc}"
    return Result(row, None)


def _results(files: list[Path], root: Path, p: HsvSplitParams, workers: int) -> Iterator[Result]:
    """Results in file order. A worker that dies (killed, out of memory, a crashing decoder) breaks the pool: the
    files it held are then retried one at a time in a fresh process, and the one that kills it again is skipped."""
    work = partial(process_file, root=root, p=p)
    if workers <= 1:
        yield from map(work, files)
        return
    pending = deque(files)
    while pending:
        inflight: deque[tuple[Path, Future]] = deque()
        try:
            with _pool(workers) as pool:
                while pending or inflight:
                    while pending and len(inflight) < WINDOW_PER_WORKER * workers:
                        path = pending.popleft()
                        inflight.append((path, pool.submit(work, path)))
                    yield inflight[0][1].result()
                    inflight.popleft()
        except BrokenProcessPool:
            log.warning("a worker died; retrying its %d files one at a time", len(inflight))
            for path, _ in inflight:
                yield _alone(work, path, root)


def _alone(work, path: Path, root: Path) -> Result:
    try:
        with _pool(1) as pool:
            return pool.submit(work, path).result()
    except BrokenProcessPool:
        return Result(_row(path, root) | {"reason": "worker died: killed or out of memory while reading this file"},
                      None)


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=_context(), initializer=_init_worker)


def _context() -> mp.context.BaseContext:
    """fork starts workers at once (the stage's own process is single-threaded); where a threaded framework is
    loaded in this process (tests, notebooks), fork can deadlock, so workers come from a clean forkserver."""
    if not THREADED_FRAMEWORKS.intersection(sys.modules):
        return mp.get_context("fork")
    context = mp.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


class PartWriter:
    """Buffers records and writes them as numbered .npy parts of at most `part_records` records."""

    def __init__(self, out: Path, part_records: int):
        self.out, self.part_records = out, part_records
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.parts = 0
        self.index: list[dict] = []

    def add(self, file: str, photo: str, records: np.ndarray) -> None:
        for tile, record in enumerate(records):
            self.index.append({"file": file, "photo": photo, "tile": tile, "part": self.parts, "offset": self.buffered})
            self.buffer.append(record)
            self.buffered += 1
            if self.buffered == self.part_records:
                self.flush()

    def flush(self) -> None:
        if self.buffered:
            np.save(self.out / f"part-{self.parts:05d}.npy", np.stack(self.buffer))
            self.parts += 1
            self.buffer, self.buffered = [], 0


def list_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: run the download stage first (dvc repro download)")
    return sorted(p for p in root.rglob("*") if p.is_file())


def run(p: HsvSplitParams, raw: Path = RAW_DIR, out: Path = HSV_DIR, report: Path = HSV_REPORT,
        metrics: Path = HSV_METRICS) -> pd.DataFrame:
    """Process every file under `raw`; returns the per-file report."""
    files = list_files(raw)
    workers = p.workers or os.cpu_count() or 1
    rows = []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        writer = PartWriter(tmp, p.part_records)
        for result in tqdm(_results(files, raw, p, workers), total=len(files), desc="hsv-split", unit="file"):
            rows.append(result.row)
            if result.records is not None:
                writer.add(result.row["file"], result.row["photo"], result.records)
        writer.flush()
        table = pd.DataFrame(rows, columns=list(rows[0]) if rows else None)
        with atomic_path(report) as report_tmp:  # written even when nothing is usable: it says why
            table.to_csv(report_tmp, index=False)
        if not writer.index:
            raise RuntimeError(f"no usable photo among {len(files)} files in {raw}; see the reasons in {report}")
        pd.DataFrame(writer.index).to_csv(tmp / "records.csv", index=False)
    write_json(metrics, summarise(table))
    counts = table["status"].value_counts().to_dict()
    log.info("hsv-split: %d files, %s, %d records", len(table), counts, int(table["records"].sum()))
    return table


def summarise(table: pd.DataFrame) -> dict:
    """Counts for the DVC metric: files by status and by skip-reason kind (text before the first ':')."""
    skipped = table[table["status"] == "skipped"]
    kinds = skipped["reason"].str.split(":").str[0].value_counts().sort_index()
    return {
        "files": int(len(table)),
        "used": int((table["status"] == "used").sum()),
        "skipped": int(len(skipped)),
        "records": int(table["records"].sum()),
        "skipped_by_reason": {str(k): int(v) for k, v in kinds.items()},
    }


def main() -> None:
    stage_main(__doc__, "hsv_split", run)


if __name__ == "__main__":
    main()
