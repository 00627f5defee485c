"""Where each output photo came from, in its metadata rather than as a watermark.

PNG text chunks (and XMP in an iTXt chunk) name the model and its version, the project's version, that the colours
were predicted by a machine-learning model (IPTC digital source type trainedAlgorithmicMedia) and the hints used.
The input's own EXIF (date, camera) is kept, with its orientation reset: the pixels are already upright.
"""
from __future__ import annotations

import importlib.metadata
import io
import json
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_KEY = "XML:com.adobe.xmp"
ORIENTATION = 0x0112  # EXIF tag
DESCRIPTION = "Colours predicted by a machine-learning model from a black-and-white photo; only the gray is original."


def project_version() -> str:
    try:
        return importlib.metadata.version("colorizer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def fields(model: str, version: str, hints: list | None = None) -> dict[str, str]:
    """The text every output carries."""
    return {"Software": f"colorizer {project_version()}", "Description": DESCRIPTION, "Model": model,
            "Model version": version, "Digital source type": DIGITAL_SOURCE_TYPE,
            "Hints": json.dumps(hints) if hints else "none"}


def video_fields(info: dict[str, str]) -> dict[str, str]:
    """The same text as a video's container tags (MP4 keeps any key with movflags use_metadata_tags): snake_case
    keys, and the description also as `comment`, which players show."""
    return {key.lower().replace(" ", "_"): value for key, value in info.items()} | {"comment": info["Description"]}


def xmp(info: dict[str, str]) -> str:
    """An XMP packet with the IPTC digital source type, the description and the tool."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        f' Iptc4xmpExt:DigitalSourceType={quoteattr(info["Digital source type"])}'
        f' xmp:CreatorTool={quoteattr(info["Software"] + " / " + info["Model"] + " " + info["Model version"])}>'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{escape(info["Description"])}</rdf:li></rdf:Alt>'
        '</dc:description></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    )


def input_exif(path: Path) -> bytes | None:
    """The photo's EXIF with orientation 1, or None when it has none or cannot be read."""
    try:
        with Image.open(path) as im:
            exif = im.getexif()
    except (OSError, ValueError, SyntaxError):
        return None
    if not len(exif):
        return None
    exif[ORIENTATION] = 1
    return exif.tobytes()


def png_bytes(bgr: np.ndarray, info: dict[str, str], exif: bytes | None = None) -> bytes:
    """A PNG of the BGR image carrying `info` as text chunks, XMP and, when given, EXIF."""
    chunks = PngImagePlugin.PngInfo()
    for key, value in info.items():
        chunks.add_itxt(key, value)
    chunks.add_itxt(XMP_KEY, xmp(info))
    out = io.BytesIO()
    image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    image.save(out, "PNG", pnginfo=chunks, compress_level=1, **({"exif": exif} if exif else {}))
    return out.getvalue()
