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

from src.core.files import CHUNK, atomic_path, sha256_file

log = logging.getLogger(__name__)
TIMEOUT_S = 60


class ChecksumError(RuntimeError):
    pass


class UnsafeArchiveError(RuntimeError):
    pass


class TooLargeError(RuntimeError):
    pass


NO_LIMIT = 2**63


def download(url: str, dest: Path, sha256: str, attempts: int = 5, max_bytes: int = NO_LIMIT) -> Path:
    """Fetch `url` to `dest`, resuming `dest.part` where an earlier transfer stopped.

    The complete file only appears at `dest` once its SHA-256 matches; a mismatch deletes the partial file
    (it cannot be resumed into a good one) and raises ChecksumError. A transfer that announces or reaches more than
    `max_bytes` stops there with TooLargeError and its partial file deleted: the disk does not fill first.
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
            _transfer(url, part, max_bytes)
            break
        except TooLargeError:
            part.unlink(missing_ok=True)
            raise
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


def _transfer(url: str, part: Path, max_bytes: int = NO_LIMIT) -> None:
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
        if total is not None and total > max_bytes:
            raise TooLargeError(f"{url} is {total} bytes, over download.max_download_bytes {max_bytes}")
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=PurePosixPath(url).name or url
        ) as bar:
            while chunk := response.read(CHUNK):
                if f.tell() + len(chunk) > max_bytes:  # a server that lies about, or omits, its length
                    raise TooLargeError(f"{url} passed download.max_download_bytes {max_bytes}; stopped")
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


def _check_totals(sizes: list[int], archive: Path, max_bytes: int, max_members: int) -> None:
    if len(sizes) > max_members:
        raise TooLargeError(f"{archive.name} has {len(sizes)} members, over download.max_members {max_members}")
    if sum(sizes) > max_bytes:
        raise TooLargeError(f"{archive.name} would extract to {sum(sizes)} bytes, over "
                            f"download.max_extract_bytes {max_bytes}")


def extract(archive: Path, dest: Path, max_bytes: int = NO_LIMIT, max_members: int = NO_LIMIT) -> Path:
    """Extract a .tar(.gz/.bz2/.xz) or .zip into `dest` atomically, refusing absolute paths, '..', links, device
    files, and archives whose members number more than `max_members` or add up to more than `max_bytes`.

    Every member is checked before anything is written, so a malicious archive leaves nothing behind.
    """
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                for info in infos:
                    _check_member(info.filename, tmp)
                    if (info.external_attr >> 16) & 0o170000 not in (0, 0o100000, 0o040000):
                        raise UnsafeArchiveError(f"refusing link or special file in archive: {info.filename!r}")
                # zipfile never writes more than a member's declared size, so the declared total bounds the disk
                _check_totals([i.file_size for i in infos], archive, max_bytes, max_members)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = []
                for m in tf:  # streamed: a member-count bomb is refused before its index fills memory
                    members.append(m)
                    if len(members) > max_members:
                        raise TooLargeError(f"{archive.name} has over {max_members} members (download.max_members)")
                    _check_member(m.name, tmp)
                    if m.issym() or m.islnk():
                        raise UnsafeArchiveError(f"refusing link in archive: {m.name!r} -> {m.linkname!r}")
                    if not (m.isfile() or m.isdir()):
                        raise UnsafeArchiveError(f"refusing special file in archive: {m.name!r}")
                _check_totals([m.size for m in members], archive, max_bytes, max_members)
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

