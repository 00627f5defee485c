"""The released automatic model quantised to int8 by onnxruntime, beside the float model it comes from.

    python -m benchmarks.quantised
    python -m benchmarks.quantised --calibration ../shared/data/imagenette --photos 64

onnxruntime's static quantisation (QDQ, int8 weights per channel, uint8 activations, min-max calibration on
`--photos` photos spread over `--calibration`'s classes, never CBSD68) and its dynamic one. For each: the network's
milliseconds per photo (batches of 8 at the release's inference size, after a warm-up), CBSD68's PSNR at 256x256
and how far its colours are from the float model's (mean, 99th percentile and largest difference in levels, over
every pixel and channel). Issue 41 offers a quantised model only if it is faster with colours within 2 levels and
the same CBSD68 PSNR to 0.05 dB. Writes experiments/benchmarks/quantised.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import save
from src.core.paths import ROOT
from src.data import colour, metrics
from src.stages.evaluate import folder_photos

CBSD68 = ROOT.parent / "shared" / "data" / "cbsd68"
BATCH, REPEATS = 8, 5


def quantised(source: Path, out: Path, kind: str, calibration: list[np.ndarray]) -> Path:
    from onnxruntime import quantization as q

    if kind == "dynamic":
        q.quantize_dynamic(source, out, weight_type=q.QuantType.QInt8)
        return out

    class Photos(q.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"gray": gray[None]} for gray in calibration)

        def get_next(self):
            return next(self.feeds, None)

    q.quantize_static(source, out, Photos(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return out


def spread(folder: Path, n: int) -> list[Path]:
    """n photos evenly spaced through a folder's sorted JPEG and PNG files: every class of a class-per-folder set."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [paths[i] for i in np.linspace(0, len(paths) - 1, min(n, len(paths))).astype(int)]


def ms_per_photo(network, batch: np.ndarray) -> float:
    network.forward(batch)
    start = time.perf_counter()
    for _ in range(REPEATS):
        network.forward(batch)
    return (time.perf_counter() - start) / (REPEATS * len(batch)) * 1000


def main(argv: list[str] | None = None) -> int:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from src.model import onnx_runtime, release

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibration", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette",
                        help="photos the activations' ranges are measured on (default: %(default)s)")
    parser.add_argument("--photos", type=int, default=64, help="how many of them (default: %(default)s)")
    args = parser.parse_args(argv)
    for folder in (args.calibration, CBSD68):
        if not folder.is_dir():
            parser.error(f"{folder} is absent (../shared/data, see its README)")

    full = onnx_runtime.load(release.WEIGHTS)
    # the automatic path alone (a hint release's base network), fed the gray photo only
    base = full if full.plain is None else dataclasses.replace(full, model=full.plain, plain=None,
                                                                spec=dataclasses.replace(full.spec, hints=False))
    calibration = [base.model_input([cv2.imread(str(path))])[0] for path in spread(args.calibration, args.photos)]
    photos = list(folder_photos(CBSD68, 256))
    lumas = [colour.luma(truth) for _, truth in photos]
    batch = np.stack(calibration[:BATCH])
    reference = base.colorize(lumas, batch_size=BATCH)
    results = {"float": {"ms/photo": round(ms_per_photo(base.model, batch), 2),
                         "CBSD68 PSNR": round(float(np.mean([metrics.psnr(c, t) for c, (_, t) in
                                                             zip(reference, photos)])), 3)}}
    print(f"float: {results['float']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(base.model.path), str(prepared), skip_symbolic_shape=True)
        for kind in ("static", "dynamic"):
            network = onnx_runtime.OnnxNetwork(quantised(prepared, Path(tmp) / f"{kind}.onnx", kind, calibration))
            model = dataclasses.replace(base, model=network)
            got = model.colorize(lumas, batch_size=BATCH)
            apart = np.concatenate([np.abs(g.astype(np.int16) - r).ravel() for g, r in zip(got, reference)])
            results[kind] = {"ms/photo": round(ms_per_photo(network, batch), 2),
                             "CBSD68 PSNR": round(float(np.mean([metrics.psnr(c, t) for c, (_, t) in
                                                                 zip(got, photos)])), 3),
                             "levels apart: mean": round(float(apart.mean()), 2),
                             "p99": float(np.percentile(apart, 99)), "max": int(apart.max())}
            results[kind]["speed vs float"] = round(results["float"]["ms/photo"] / results[kind]["ms/photo"], 2)
            print(f"{kind}: {results[kind]}", flush=True)
    results["calibration"] = f"{args.photos} photos of {args.calibration.name}"
    print(f"wrote {save('quantised', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
