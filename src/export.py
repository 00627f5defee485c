"""Export the released colorizer as ONNX files for onnxruntime: colouring without TensorFlow (docs/serving.md).

    python -m src.export                 # the release's files into the cache (~/.cache/colorizer), checked
    python -m src.export --out onnx/     # ... into a folder, to run from another language
    python -m src.export --record        # after `python -m src.publish`: record their SHA-256 beside the release

`python -m src.colorize` and the page build them on first use; this builds them ahead (a container image, say).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from src.model import onnx_runtime, release

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, default=release.WEIGHTS, help="release file (default: %(default)s)")
    parser.add_argument("--out", type=Path, help=f"folder for the files (default: the cache, ${onnx_runtime.CACHE_VAR} "
                                                 "or ~/.cache/colorizer)")
    parser.add_argument("--record", action="store_true",
                        help="write release/NAME.onnx.sha256 from this build (a new release; commit it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from src.core.files import sha256_file
    from src.model import onnx_export

    try:
        files = onnx_export.build(args.release, args.out or onnx_runtime.cache_dir())
    except (release.ReleaseError, OSError) as exc:
        log.error("%s", exc)
        return 1
    if args.record:
        log.info("recorded %s", onnx_export.record(args.release, files))
    expected = onnx_runtime.recorded(args.release)
    differ = 0
    for path in files.values():
        digest = sha256_file(path)
        verdict = ("the release's" if expected.get(path.name) == digest else
                   "NOT the release's" if path.name in expected else "not recorded by the release")
        differ += path.name in expected and expected[path.name] != digest
        log.info("%s: %.1f MiB, SHA-256 %s (%s)", path, path.stat().st_size / 2**20, digest[:12], verdict)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
