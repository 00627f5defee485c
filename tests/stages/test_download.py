"""download: real transfers from an HTTP server on 127.0.0.1 (ranges, cuts, bad checksums, hostile archives)."""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import pytest

from src.core.params import DownloadParams
from src.data import fetch
from src.stages import download
from tests.conftest import photo, shared_folder


class ArchiveServer(ThreadingHTTPServer):
    """Serves named byte strings with Range support; `cut_next` truncates the next N responses midway."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.cut_next = 0
        self.no_length: set[str] = set()  # names served without Content-Length (the body ends at close)
        self.requests: list[str | None] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.server.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.server.requests.append(rng)
        start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
        if start >= len(body):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if self.path.lstrip("/") not in self.server.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.server.cut_next:
            self.server.cut_next -= 1
            payload = payload[: len(payload) // 2]  # the connection drops halfway
        self.wfile.write(payload)


@pytest.fixture
def server():
    srv = ArchiveServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def photo_tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def png(seed: int) -> bytes:
    return cv2.imencode(".png", photo(seed=seed))[1].tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_url_source_downloads_verifies_and_extracts(server, tmp_path):
    archive = photo_tar({"test_256/a.png": png(1), "test_256/sub/b.png": png(2)})
    server.files["test_256.tar.gz"] = archive
    p = DownloadParams(source="url", url=server.url("test_256.tar.gz"), sha256=sha(archive))
    out = download.run(p, out=tmp_path / "raw", cache=tmp_path / "cache")
    assert (out / "test_256" / "sub" / "b.png").read_bytes() == png(2)
    assert (tmp_path / "cache" / "test_256.tar.gz").read_bytes() == archive
    assert not list((tmp_path / "cache").glob("*.part"))


def test_a_transfer_cut_midway_resumes_with_a_range_request(server, tmp_path):
    archive = photo_tar({f"p{i}.png": png(i) for i in range(8)})
    server.files["big.tar.gz"] = archive
    server.cut_next = 1
    dest = fetch.download(server.url("big.tar.gz"), tmp_path / "big.tar.gz", sha(archive))
    assert dest.read_bytes() == archive
    assert server.requests[0] is None and server.requests[1] == f"bytes={len(archive) // 2}-"


def test_a_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    archive = photo_tar({"p.png": png(3)})
    server.files["a.tar.gz"] = archive
    (tmp_path / "a.tar.gz.part").write_bytes(archive[:100])
    fetch.download(server.url("a.tar.gz"), tmp_path / "a.tar.gz", sha(archive))
    assert server.requests == ["bytes=100-"]
    assert (tmp_path / "a.tar.gz").read_bytes() == archive


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    server.files["a.tar.gz"] = photo_tar({"p.png": png(1)})
    with pytest.raises(fetch.ChecksumError, match="checksum mismatch"):
        fetch.download(server.url("a.tar.gz"), tmp_path / "a.tar.gz", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_missing_checksum_and_missing_file_are_clear_errors(server, tmp_path):
    with pytest.raises(ValueError, match="sha256 is required"):
        download.run(DownloadParams(source="url", url=server.url("x.tar")), out=tmp_path / "o", cache=tmp_path)
    with pytest.raises(RuntimeError, match="HTTP 404"):
        fetch.download(server.url("missing.tar"), tmp_path / "m.tar", "0" * 64)


@pytest.mark.parametrize("member", ["../escape.png", "/abs/escape.png", "a/../../escape.png"])
def test_archives_with_paths_leaving_the_folder_are_refused(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(photo_tar({"ok.png": png(1), member: png(2)}))
    with pytest.raises(fetch.UnsafeArchiveError):
        fetch.extract(archive, tmp_path / "out" / "raw")
    assert not (tmp_path / "out" / "raw").exists()
    assert not list(tmp_path.rglob("escape.png"))


def tar_with(kind: str) -> bytes:
    """An otherwise harmless tar holding one hostile member of `kind`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ok = tarfile.TarInfo("ok.png")
        data = png(1)
        ok.size = len(data)
        tf.addfile(ok, io.BytesIO(data))
        evil = tarfile.TarInfo("innocent.png")
        evil.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE,
                     "blockdev": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
        evil.linkname = {"symlink": "/etc/passwd", "hardlink": "../../outside.png"}.get(kind, "")
        evil.devmajor, evil.devminor = 1, 3  # /dev/null's numbers
        tf.addfile(evil)
    return buf.getvalue()


def zip_with(kind: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.png", png(1))
        if kind == "slip":
            zf.writestr("../../outside.png", png(2))
        else:  # a symbolic link: Unix mode S_IFLNK in the external attributes, the target as the data
            info = zipfile.ZipInfo("innocent.png")
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("archive", ["tar-symlink", "tar-hardlink", "tar-chardev", "tar-blockdev", "tar-fifo",
                                     "zip-symlink", "zip-slip"])
def test_hostile_archives_are_refused_and_nothing_is_written_anywhere(tmp_path, archive):
    fmt, kind = archive.split("-")
    path = tmp_path / "in" / f"evil.{fmt}"
    path.parent.mkdir()
    path.write_bytes(tar_with(kind) if fmt == "tar" else zip_with(kind))
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    before = tree(tmp_path)
    with pytest.raises(fetch.UnsafeArchiveError):
        fetch.extract(path, work / "raw")
    assert tree(tmp_path) == before  # no member, no temporary folder, nothing beside or above the target


def test_zip_archives_extract(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("photos/a.png", png(1))
    assert (fetch.extract(good, tmp_path / "raw") / "photos" / "a.png").read_bytes() == png(1)


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_archives_over_the_size_or_member_limits_are_refused_before_extracting(tmp_path, fmt):
    entries = {f"p{i}.png": png(i) for i in range(3)}
    path = tmp_path / f"many.{fmt}"
    if fmt == "tar":
        path.write_bytes(photo_tar(entries))
    else:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
    total = sum(map(len, entries.values()))
    with pytest.raises(fetch.TooLargeError, match="max_extract_bytes"):
        fetch.extract(path, tmp_path / "a", max_bytes=total - 1)
    with pytest.raises(fetch.TooLargeError, match="max_members"):
        fetch.extract(path, tmp_path / "b", max_members=2)
    assert tree(tmp_path) == {path.name}
    assert len(list(fetch.extract(path, tmp_path / "c", max_bytes=total, max_members=3).iterdir())) == 3


@pytest.mark.parametrize("announced", [True, False])
def test_a_download_larger_than_the_maximum_stops_and_leaves_no_file(server, tmp_path, announced):
    body = b"x" * 3_000_000
    server.files["big.tar"] = body
    if not announced:
        server.no_length.add("big.tar")  # no Content-Length: the limit must hold while streaming
    with pytest.raises(fetch.TooLargeError, match="max_download_bytes"):
        fetch.download(server.url("big.tar"), tmp_path / "big.tar", sha(body), max_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []
    assert fetch.download(server.url("big.tar"), tmp_path / "big.tar", sha(body)).stat().st_size == len(body)


def test_samples_source_ships_real_colour_photos(tmp_path):
    out = download.run(DownloadParams(source="samples"), out=tmp_path / "raw")
    names = sorted(f.name for f in out.iterdir())
    assert "skimage-astronaut.png" in names and len(names) >= 6


def test_folder_source_copies_every_file_recursively(photo_folder, tmp_path):
    (photo_folder / "sub").mkdir()
    (photo_folder / "sub" / "readme.txt").write_text("kept: hsv-split reports it")
    out = download.run(DownloadParams(source="folder", folder=str(photo_folder)), out=tmp_path / "raw")
    assert sorted(f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file()) == sorted(
        [f"photo{i}.png" for i in range(6)] + ["sub/readme.txt"]
    )


def _folders(tmp_path, *names: str):
    """Folders of real PNG photos whose file names are the same in each (photo0.png ...)."""
    made = []
    for k, name in enumerate(names):
        folder = tmp_path / f"src{k}" / name
        folder.mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(folder / f"photo{i}.png"), photo(seed=10 * k + i))
        made.append(folder)
    return made


def test_folders_source_stores_each_folder_under_its_name_so_equal_names_never_clash(tmp_path):
    city, forest = _folders(tmp_path, "city", "forest")
    (forest / "deep").mkdir()
    cv2.imwrite(str(forest / "deep" / "photo0.png"), photo(seed=99))
    out = download.run(DownloadParams(source="folders", folders=(str(city), str(forest))), out=tmp_path / "raw")
    stored = sorted(f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file())
    assert stored == ["city/photo0.png", "city/photo1.png", "city/photo2.png", "forest/deep/photo0.png",
                      "forest/photo0.png", "forest/photo1.png", "forest/photo2.png"]
    assert (out / "forest" / "photo1.png").read_bytes() == (forest / "photo1.png").read_bytes()


def test_download_lists_each_raw_file_with_its_size_and_checksum_beside_the_folder(tmp_path):
    import hashlib

    import pandas as pd

    city, forest = _folders(tmp_path, "city", "forest")
    out = download.run(DownloadParams(source="folders", folders=(str(city), str(forest))), out=tmp_path / "raw")
    table = pd.read_csv(tmp_path / "raw.csv").set_index("file")
    assert sorted(table.index) == sorted(f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file())
    body = (forest / "photo2.png").read_bytes()
    assert table.loc["forest/photo2.png", "bytes"] == len(body)
    assert table.loc["forest/photo2.png", "sha256"] == hashlib.sha256(body).hexdigest()
    assert table.loc["city/photo2.png", "sha256"] != table.loc["forest/photo2.png", "sha256"]


@pytest.mark.parametrize("case", ["missing", "no image", "same name", "empty list"])
def test_a_bad_folders_entry_is_a_clear_error_naming_it_and_nothing_is_written(tmp_path, case):
    good, = _folders(tmp_path, "good")
    bad = {"missing": tmp_path / "nowhere", "no image": tmp_path / "notes", "same name": tmp_path / "other" / "good",
           "empty list": None}[case]
    if case == "no image":
        bad.mkdir()
        (bad / "readme.txt").write_text("not a photo")
    if case == "same name":
        _folders(tmp_path / "other", "good")
        bad = tmp_path / "other" / "src0" / "good"
    folders = () if bad is None else (str(good), str(bad))
    message = {"missing": "is not a folder", "no image": "holds no image", "same name": "are both named 'good'",
               "empty list": "needs download.folders"}[case]
    with pytest.raises((FileNotFoundError, RuntimeError, ValueError), match=message) as err:
        download.run(DownloadParams(source="folders", folders=folders), out=tmp_path / "raw")
    if bad is not None:
        assert str(bad) in str(err.value)
    assert not (tmp_path / "raw").exists()


def test_folders_source_on_real_photo_folders_keeps_every_file_of_each(tmp_path):
    coco, cbsd = shared_folder("coco"), shared_folder("cbsd68")
    out = download.run(DownloadParams(source="folders", folders=(str(coco), str(cbsd))), out=tmp_path / "raw")
    for folder in (coco, cbsd):
        expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        got = sorted(p.relative_to(out / folder.name).as_posix() for p in (out / folder.name).rglob("*") if p.is_file())
        assert got == expected and len(got) >= 68
    assert sorted(p.name for p in out.iterdir()) == ["cbsd68", "coco"]
