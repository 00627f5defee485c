"""Stage `download`: gather raw colour photos into data/raw.

    python -m src.stages.download            # uses params.yaml: download.*

Sources: `samples` (real photos that installed packages ship; offline default), `folder` (a local folder, copied
recursively, every file kept so the next stage can account for it), `folders` (several, each copied under its own
name: data/raw/<name>/..., so equal file names never clash and hsv-split reports each file's folder) or `url` (a tar/zip archive, e.g. Places365's
256x256 test archive, verified by SHA-256, resumed if interrupted, extracted safely). Beside data/raw it writes
data/raw.csv: each file with its size and SHA-256, the table hsv-split depends on in dvc.yaml.
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from src.core.entry import stage_main
from src.core.files import atomic_path, sha256_file
from src.core.params import DownloadParams
from src.core.paths import DOWNLOAD_CACHE, RAW_DIR
from src.data import fetch

log = logging.getLogger(__name__)

# Real everyday colour photographs shipped inside installed packages: (package, path inside it).
# Left out: synthetic or near-gray images (logos, colour wheel, text, microscopy, grayscale test images) and
# motorcycle_right.png, the stereo twin of motorcycle_left.png (it would leak across splits).
SAMPLE_PHOTOS = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


IMAGE_SUFFIXES = frozenset(Image.registered_extensions())


def sample_photos() -> list[tuple[Path, str]]:
    """(absolute path, destination name) of the shipped sample photos that are installed."""
    found = []
    for package, rel in SAMPLE_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            log.warning("package %s is not installed; its sample photo %s is left out", package, rel)
            continue
        path = Path(spec.origin).parent / rel
        if path.is_file():
            found.append((path, f"{package}-{path.name}"))
        else:
            log.warning("%s does not ship %s; left out", package, rel)
    if not found:
        raise RuntimeError("no sample photos found: install scikit-image, scikit-learn or matplotlib")
    return found


def folder_files(folder: Path, key: str = "download.folder", prefix: str = "") -> list[tuple[Path, str]]:
    """Every regular file under `folder`, keeping relative paths below `prefix` (hidden files too: hsv-split
    reports them). A folder with no file that has an image extension is refused: it is almost surely the wrong one."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{key} {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
        raise RuntimeError(f"{key} {folder} holds no image ({len(files)} files, none with an image extension)")
    return [(p, prefix + p.relative_to(folder).as_posix()) for p in files]


def folders_files(folders: tuple[str, ...]) -> list[tuple[Path, str]]:
    """The files of several folders, each under its folder's name; two folders of one name are refused."""
    if not folders:
        raise ValueError("download.source folders needs download.folders: a list of folders")
    named: dict[str, Path] = {}
    for entry in folders:
        folder = Path(entry).expanduser()
        name = folder.resolve().name
        if name in named:
            raise ValueError(f"download.folders: {named[name]} and {folder} are both named {name!r}; "
                             f"their files would share data/raw/{name}/: rename or link one")
        named[name] = folder
    return [f for name, folder in named.items() for f in folder_files(folder, "download.folders entry", f"{name}/")]


def copy_files(files: list[tuple[Path, str]], out: Path) -> None:
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for src, rel in tqdm(files, desc="copy", unit="file"):
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def write_table(raw: Path, table: Path) -> pd.DataFrame:
    """Each file under `raw` with its size and SHA-256, written to `table`: a change to any raw file changes it."""
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    rows = pd.DataFrame({"file": [p.relative_to(raw).as_posix() for p in files],
                         "bytes": [p.stat().st_size for p in files],
                         "sha256": [sha256_file(p) for p in tqdm(files, desc="checksum", unit="file")]})
    with atomic_path(table) as tmp:
        rows.to_csv(tmp, index=False)
    return rows


def run(p: DownloadParams, out: Path = RAW_DIR, cache: Path = DOWNLOAD_CACHE) -> Path:
    """Fill `out` with the raw photos of the configured source and list them beside it (data/raw.csv for data/raw);
    returns `out`."""
    if p.source == "samples":
        copy_files(sample_photos(), out)
    elif p.source == "folder":
        copy_files(folder_files(Path(p.folder).expanduser()), out)
    elif p.source == "folders":
        copy_files(folders_files(p.folders), out)
    elif p.source == "url":
        if not p.url.startswith(("http://", "https://")):
            raise ValueError(f"download.url must be an http(s) URL, got {p.url!r}")
        # The archive lives outside the DVC output, so a killed transfer resumes on the next run.
        archive = fetch.download(p.url, cache / fetch.archive_name(p.url), p.sha256, max_bytes=p.max_download_bytes)
        fetch.extract(archive, out, max_bytes=p.max_extract_bytes, max_members=p.max_members)
    else:
        raise ValueError(f"download.source must be samples, folder, folders or url, got {p.source!r}")
    table = out.with_suffix(".csv")
    rows = write_table(out, table)
    log.info("raw photos in %s: %d files, %.1f MB (listed in %s)", out, len(rows), rows["bytes"].sum() / 1e6, table)
    return out


def main() -> None:
    stage_main(__doc__, "download", run)


if __name__ == "__main__":
    main()
