"""Download an archive over HTTP(S) with resume, checksum and progress; extract it safely."""
from __future__ import annotations

import http.client
import logging
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from src.files import CHUNK, atomic_path, sha256_file

log = logging.getLogger(__name__)
TIMEOUT_S = 60


class ChecksumError(RuntimeError):
    pass


class UnsafeArchiveError(RuntimeError):
    pass


def download(url: str, dest: Path, sha256: str, attempts: int = 5) -> Path:
    """Fetch `url` to `dest`, resuming `dest.part` where an earlier transfer stopped.

    The complete file only appears at `dest` once its SHA-256 matches; a mismatch deletes the partial file
    (it cannot be resumed into a good one) and raises ChecksumError.
    """
    if not sha256:
        raise ValueError("download.sha256 is required for source: url (the archive is verified before use)")
    sha256 = sha256.lower()
    if dest.exists() and sha256_file(dest) == sha256:
        log.info("%s already downloaded and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part)
            break
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500 and exc.code != 416:
                raise RuntimeError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
            if attempt == attempts:
                raise RuntimeError(f"download of {url} failed after {attempts} attempts: {exc}") from exc
            log.warning("transfer interrupted (%s); resuming (attempt %d/%d)", exc, attempt + 1, attempts)
    actual = sha256_file(part)
    if actual != sha256:
        part.unlink()
        raise ChecksumError(f"checksum mismatch for {url}: expected {sha256}, got {actual}")
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path) -> None:
    """Append the rest of `url` to `part` (HTTP Range), or start over if the server ignores ranges."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # nothing left to fetch: the part file is already complete
            return
        raise
    with response:
        resumed = response.status == 206
        if have and not resumed:
            log.info("server ignored the range request; starting %s over", url)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=PurePosixPath(url).name or url
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise ConnectionError(f"connection closed at {part.stat().st_size} of {total} bytes")


def _check_member(name: str, root: Path) -> Path:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"refusing archive member outside the target folder: {name!r}")
    target = (root / path).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UnsafeArchiveError(f"refusing archive member outside the target folder: {name!r}")
    return target


def extract(archive: Path, dest: Path) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into `dest` atomically, refusing absolute paths, '..' and links.

    Every member is checked before anything is written, so a malicious archive leaves nothing behind.
    """
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, tmp)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UnsafeArchiveError(f"refusing symbolic link in archive: {info.filename!r}")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(m.name, tmp)
                    if m.issym() or m.islnk():
                        raise UnsafeArchiveError(f"refusing link in archive: {m.name!r} -> {m.linkname!r}")
                    if not (m.isfile() or m.isdir()):
                        raise UnsafeArchiveError(f"refusing special file in archive: {m.name!r}")
                # the 'data' filter is tarfile's own second line of defence (PEP 706)
                tf.extractall(tmp, members=members, filter="data")
        else:
            raise ValueError(f"{archive} is neither a tar nor a zip archive")
    return dest


def archive_name(url: str) -> str:
    name = PurePosixPath(urllib.request.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot tell the archive's file name from {url!r}")
    return name

