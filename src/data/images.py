"""Decode photos robustly: every file becomes a BGR uint8 image or a stated reason to skip it."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from src.data.colour import mean_chroma

Image.MAX_IMAGE_PIXELS = None  # the pixel limit is ours (max_pixels), checked from the header
MAX_FILE_BYTES = 256 * 2**20  # larger files are skipped unread (hsv_split.max_file_bytes)


class Skip(Exception):
    """A file that cannot or should not be used; the message is the recorded reason."""


@dataclass(frozen=True)
class Photo:
    bgr: np.ndarray  # uint8 (h, w, 3), EXIF orientation applied, possibly decoded at 1/scale
    width: int  # as declared by the file
    height: int
    scale: int = 1  # JPEG decoded at 1/scale of its size (DCT scaling, far cheaper than a full decode)


REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _declared_size(data: bytes) -> tuple[int, int, str]:
    """(width, height, format) from the header alone, without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width, im.height, (im.format or "").upper()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise Skip(f"not an image: {type(exc).__name__}") from exc


def _looks_truncated(data: bytes, fmt: str) -> bool:
    """JPEG and PNG carry end markers; OpenCV silently decodes a cut file with gray or garbage rows."""
    if fmt == "JPEG":
        return jpeg_end(data) is None
    if fmt == "PNG":
        return b"IEND" not in data[-4096:]
    return False


_STANDALONE = {0xD8, 0x01, *range(0xD0, 0xD8)}  # SOI, TEM, RSTn: markers without a length


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the JPEG's EOI marker, or None when the file stops before it.

    Walks the marker segments, so an EXIF thumbnail's own EOI is skipped with its APP1 segment, and anything
    after EOI (a phone's "motion photo" video, padding) is ignored. Inside entropy-coded data a 0xFF byte is
    stuffed as FF00 and RSTn markers may occur; any other FFxx ends the scan.
    """
    pos, n = 2, len(data)
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            return None
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            while (pos := data.find(b"\xff", pos)) != -1 and pos + 1 < n and (
                    data[pos + 1] == 0 or 0xD0 <= data[pos + 1] <= 0xD7):
                pos += 2
            if pos == -1 or pos + 1 >= n:
                return None
    return None


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return np.round(img / 257.0).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    raise Skip(f"unsupported sample type {img.dtype}")


def decode(data: bytes, max_pixels: int, max_scale: float = 1, min_side: int = 0) -> Photo:
    """Bytes of an image file -> Photo, or raise Skip with the reason.

    A JPEG is decoded at 1/2, 1/4 or 1/8 of its size where that factor is at most `max_scale` and keeps the short
    side at least `min_side` px.
    """
    if not data:
        raise Skip("empty file")
    width, height, fmt = _declared_size(data)
    if width * height > max_pixels:
        raise Skip(f"too large: {width}x{height} exceeds {max_pixels} pixels")
    if _looks_truncated(data, fmt):
        raise Skip(f"truncated {fmt} file")
    # IMREAD_COLOR applies EXIF orientation and converts gray/palette/CMYK/RGBA to BGR; ANYDEPTH keeps 16-bit
    # PNG/TIFF samples (JPEG is 8-bit, and its decoder runs ~15% slower with the flag).
    flags = cv2.IMREAD_COLOR if fmt in ("JPEG", "WEBP", "GIF") else cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    fits = [r for r in REDUCED if r <= max_scale and min(width, height) / r >= min_side]
    scale = max(fits, default=1) if fmt == "JPEG" else 1
    flags = REDUCED.get(scale, flags)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise Skip(f"undecodable: {str(exc).strip().splitlines()[-1]}") from exc
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise Skip(f"undecodable {fmt or 'image'} file")
    return Photo(_to_uint8(img), width, height, scale)


def read_bytes(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes, or Skip: a file over `max_bytes` is refused from its size alone, before any read."""
    try:
        size = Path(path).stat().st_size
        if size > max_bytes:
            raise Skip(f"file too large: {size} bytes exceeds {max_bytes}")
        return Path(path).read_bytes()
    except OSError as exc:
        raise Skip(f"unreadable: {exc.strerror or exc}") from exc


def read(path: Path, max_pixels: int, max_bytes: int = MAX_FILE_BYTES) -> Photo:
    """Decode one file; anything that goes wrong is a Skip with its reason, so callers skip only that file."""
    return decode_or_skip(read_bytes(path, max_bytes), max_pixels)


def decode_or_skip(data: bytes, max_pixels: int) -> Photo:
    """decode(), with any error of the decoder turned into a Skip: one bad file, not the end of the command."""
    try:
        return decode(data, max_pixels)
    except Skip:
        raise
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"error: {type(exc).__name__}: {exc}") from exc


def check_colour(records: np.ndarray, gray_threshold: float) -> float:
    """Mean chroma of a photo's records (its resized crops: cheap, same verdict); Skip gray ones."""
    chroma = mean_chroma(records)
    if chroma == 0.0:
        raise Skip("grayscale")
    if chroma < gray_threshold:
        raise Skip(f"near-gray: mean chroma {chroma:.2f} < {gray_threshold}")
    return chroma


def square_crops(bgr: np.ndarray, tile: int) -> list[np.ndarray]:
    """Centre square crop (tile=0), or the centred grid of non-overlapping tile x tile crops."""
    h, w = bgr.shape[:2]
    if tile <= 0 or min(h, w) < tile:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return [bgr[top : top + side, left : left + side]]
    ny, nx = h // tile, w // tile
    top, left = (h - ny * tile) // 2, (w - nx * tile) // 2
    return [
        bgr[top + r * tile : top + (r + 1) * tile, left + c * tile : left + (c + 1) * tile]
        for r in range(ny)
        for c in range(nx)
    ]


def resize_square(bgr: np.ndarray, size: int) -> np.ndarray:
    """Image -> size x size (a non-square one is squashed); area averaging when shrinking avoids aliasing."""
    if bgr.shape[:2] == (size, size):
        return bgr
    interpolation = cv2.INTER_AREA if min(bgr.shape[:2]) > size else cv2.INTER_CUBIC
    return cv2.resize(bgr, (size, size), interpolation=interpolation)
