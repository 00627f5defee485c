"""Inference: load a trained colorizer, predict chroma, render colour images that keep the input's luma."""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from src.data import colour, hints
from src.data.pipeline import InputSpec

MODEL_FILE = "model.keras"
META_FILE = "model.json"

if TYPE_CHECKING:
    import keras


def compiled(model) -> Callable:
    """A Keras model -> a function: inputs -> its outputs as numpy, run as one TensorFlow graph per batch size.
    Eager calls dispatch every layer from Python: measured 5.5x slower on 64 px photos, 1.8x at 288 px. A batch
    smaller than one already traced is padded to it rather than traced again (a trace costs a few batches)."""
    import tensorflow as tf

    graph = tf.function(lambda inputs: model(inputs, training=False), autograph=False)  # no temporary files
    traced: set[int] = set()

    def run(inputs):
        n = len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)
        rows = min((r for r in traced if r >= n), default=n)
        traced.add(rows)
        return graph(pad_rows(inputs, rows)).numpy()[:n]

    return run


def runner(model) -> Callable:
    """inputs -> numpy outputs: a model's own `forward` (an ONNX session), else the Keras model compiled."""
    return getattr(model, "forward", None) or compiled(model)


def pad_rows(inputs, rows: int):
    """A batch (an array or a dict of arrays) with its last row repeated up to `rows`."""
    def pad(a: np.ndarray) -> np.ndarray:
        return a if len(a) == rows else np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)])

    return {k: pad(v) for k, v in inputs.items()} if isinstance(inputs, dict) else pad(inputs)


@dataclass(frozen=True)
class Colorizer:
    model: keras.Model  # or an object with a `forward` of its own: inputs -> numpy outputs
    spec: InputSpec
    image_size: int  # the square size the model runs at (train.model.inference_size, else the training photos')
    plain: keras.Model | None = None  # a hint model's: colours photos without hints as it does, at less cost

    def inputs(self, gray: np.ndarray, hint_maps: np.ndarray | None = None):
        """What the model is called with: the gray batch, or for a hint model {"gray", "hints"} (none: zeros)."""
        if not self.spec.hints:
            if hints.any_given(hint_maps):
                raise ValueError("this model takes no hints: train one with train.model.hints: true")
            return gray
        if hint_maps is None:
            hint_maps = np.zeros((*gray.shape[:3], hints.CHANNELS), np.float32)
        return {"gray": gray, "hints": hint_maps}

    def scores(self, gray: np.ndarray, batch_size: int = 16, hint_maps: np.ndarray | None = None) -> np.ndarray:
        """uint8 gray (n, s, s, 1) -> the model's raw outputs: encoded chroma, or class scores for bins.
        `hint_maps` (n, s, s, 3): the hints of each image at the model's resolution (hints.hint_map)."""
        def part(i):  # rather than model.predict: no progress noise
            rows = slice(i, i + batch_size)
            given = None if hint_maps is None else hint_maps[rows]
            if self.plain is not None and not hints.any_given(given):
                return self.plain_forward(gray[rows])
            return self.forward(self.inputs(gray[rows], given))

        return np.concatenate([part(i) for i in range(0, len(gray), batch_size)])

    def automatic(self) -> Colorizer:
        """This colorizer without its hint path: a hint model's own network for photos without hints, or itself."""
        if self.plain is None:
            return self
        return replace(self, model=self.plain, spec=replace(self.spec, hints=False), plain=None)

    @functools.cached_property
    def forward(self) -> Callable:
        return runner(self.model)

    @functools.cached_property
    def plain_forward(self) -> Callable:
        return runner(self.plain)

    def decode(self, scores: np.ndarray) -> np.ndarray:
        """Raw outputs -> encoded chroma (n, s, s, 2): bins' class scores become their annealed mean."""
        if colour.is_bins(self.spec.target):
            return colour.annealed_mean(scores, self.spec.temperature, self.spec.boost, target=self.spec.target)
        return scores

    def predict(self, gray: np.ndarray, batch_size: int = 16, hint_maps: np.ndarray | None = None) -> np.ndarray:
        """uint8 gray (n, s, s, 1) -> encoded chroma (n, s, s, 2), decoded a batch at a time: a bins model's class
        scores are 44x the size of the chroma (88 classes vs 2), so they are never held for more than one batch."""
        return np.concatenate([
            self.decode(self.scores(gray[i : i + batch_size], batch_size,
                                    None if hint_maps is None else hint_maps[i : i + batch_size]))
            for i in range(0, len(gray), batch_size)])

    def hint_maps(self, images: list[np.ndarray], given: list[list[hints.Hint]] | None) -> np.ndarray | None:
        """Each image's hints (photo pixels) -> their maps at the model's resolution; None without hints."""
        if not given or not any(given):
            return None
        return np.stack([hints.hint_map(h, im.shape[:2], self.image_size) for im, h in zip(images, given)])

    def model_input(self, images: list[np.ndarray]) -> np.ndarray:
        """Colour or gray uint8 images of any size -> the model's uint8 gray input (n, s, s, 1)."""
        size = self.image_size
        return np.stack([cv2.resize(colour.model_gray(im, self.spec.gray), (size, size), interpolation=cv2.INTER_AREA)
                         for im in images])[..., None]

    def records_input(self, records: np.ndarray) -> np.ndarray:
        """uint8 records (n, s, s, 4) -> the model's gray input (n, image_size, image_size, 1)."""
        gray = colour.gray_input(records, self.spec.gray)
        return gray if gray.shape[1] == self.image_size else self.model_input(list(gray[..., 0]))

    def colorize(self, images: list[np.ndarray], batch_size: int = 16, scores: np.ndarray | None = None,
                 given: list[list[hints.Hint]] | None = None) -> list[np.ndarray]:
        """Colour or gray uint8 images of any size -> BGR at their full resolution.

        Chroma is predicted at the model's resolution, upsampled, and combined with the full-resolution luma.
        `scores`: the model's raw outputs for model_input(images), when already computed (re-decoding with other
        settings runs no network). `given`: each image's colour hints (a hint model's).
        """
        if scores is None:
            encoded = self.predict(self.model_input(images), batch_size, self.hint_maps(images, given))
        else:
            encoded = self.decode(scores)
        return [self.render(im if im.ndim == 2 else colour.luma(im), enc) for im, enc in zip(images, encoded)]

    def render(self, luma: np.ndarray, encoded: np.ndarray) -> np.ndarray:
        """Encoded chroma at model resolution + the photo's luma (h, w) -> uint8 BGR (h, w, 3) at the photo's size,
        in strips of rows on every core: the float temporaries of a 25 MP photo would otherwise take gigabytes."""
        out = np.empty((*luma.shape, 3), np.uint8)
        upsample = chroma_upsampler(encoded, luma)

        def one(rows: slice) -> None:
            out[rows] = colour.render_prediction(luma[rows], upsample(rows), self.spec.target)

        parts = strips(*luma.shape)
        if len(parts) == 1:
            one(parts[0])
        else:  # numpy and OpenCV release the GIL on large arrays: the strips run in parallel
            with ThreadPoolExecutor(min(len(parts), os.cpu_count() or 1)) as pool:
                list(pool.map(one, parts))
        return out

    def colorize_records(self, records: np.ndarray, batch_size: int = 16,
                         scores: np.ndarray | None = None) -> np.ndarray:
        """uint8 records (n, s, s, 4) -> uint8 BGR (n, s, s, 3) with the records' own luma.

        The model runs at image_size: records of another size are resized to it, and the chroma brought back.
        `scores`: the model's raw outputs for these records, when already computed (decoding settings sweeps).
        """
        encoded = self.predict(self.records_input(records), batch_size) if scores is None else self.decode(scores)
        return np.stack([self.render(r[..., colour.Y], e) for r, e in zip(records, encoded)])


STRIP_PIXELS = 1 << 20  # full-resolution work is done about 1 MP at a time


def strips(h: int, w: int, strip_pixels: int = STRIP_PIXELS) -> list[slice]:
    step = max(1, strip_pixels // w)
    return [slice(top, min(h, top + step)) for top in range(0, h, step)]


def upsample_chroma(encoded: np.ndarray, luma: np.ndarray, sigma: float = 0.05) -> np.ndarray:
    """Chroma (s, s, 2) at model resolution -> (h, w, 2) at the photo's, stopping at the photo's own edges."""
    upsample = chroma_upsampler(encoded, luma, sigma)
    return np.concatenate([upsample(rows) for rows in strips(*luma.shape)])


def chroma_upsampler(encoded: np.ndarray, luma: np.ndarray, sigma: float = 0.05) -> Callable[[slice], np.ndarray]:
    """A function: rows of the photo -> their chroma (rows, w, 2), so a large photo is done a strip at a time.

    Joint bilateral upsampling (Kopf et al., SIGGRAPH 2007) over the bilinear neighbours: each full-resolution
    pixel takes the chroma of its four nearest model-resolution pixels, weighted by distance as bilinear does and
    by how close their luma is to its own (Gaussian, sigma in 0..1 luma). Plain bilinear upsampling smears colour
    across edges by the upsampling factor: sky bleeds into a roof line.
    """
    s_h, s_w = encoded.shape[:2]
    h, w = luma.shape
    if max(h / s_h, w / s_w) < 1.5:
        whole = cv2.resize(encoded, (w, h), interpolation=cv2.INTER_LINEAR)
        return lambda rows: whole[rows]
    small_y = cv2.resize(luma, (s_w, s_h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    def neighbours(n_out: int, n_in: int):  # low-res index below each output pixel centre, and the fraction past it
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.minimum(pos.astype(np.int64), n_in - 2)
        return low, pos - low

    (iy_all, fy_all), (ix, fx) = neighbours(h, s_h), neighbours(w, s_w)

    def upsample(rows: slice) -> np.ndarray:
        iy, fy, y = iy_all[rows], fy_all[rows], luma[rows].astype(np.float32) / 255.0
        num, den = np.zeros((len(iy), w, encoded.shape[-1]), np.float32), np.zeros((len(iy), w), np.float32)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            near_y, near_c = small_y[iy + dy], encoded[iy + dy]  # rows first, then columns: two cheap gathers
            for dx, wx in ((0, 1 - fx), (1, fx)):
                weight = wy[:, None] * wx[None, :] * np.exp((y - near_y[:, ix + dx]) ** 2 * (-0.5 / sigma**2))
                weight += 1e-6
                num += weight[..., None] * near_c[:, ix + dx]
                den += weight
        return num / den[..., None]

    return upsample


def save(model: keras.Model, spec: InputSpec, image_size: int, out: Path, extra: dict | None = None) -> None:
    """model.keras plus model.json (what the encodings are), into an existing folder."""
    model.save(out / MODEL_FILE)
    meta = {"gray": spec.gray, "target": spec.target, "temperature": spec.temperature, "colour_boost": spec.boost,
            "hints": spec.hints, "image_size": image_size, **(extra or {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load(folder: Path | str) -> Colorizer:
    """Load a saved colorizer in Keras safe mode: no code from the file is executed."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).exists():
        raise FileNotFoundError(f"no {MODEL_FILE} in {folder}: run the train stage first (dvc repro train)")
    import src.model.losses  # noqa: F401 - registers the loss/metric classes named in the saved config
    import src.model.network  # noqa: F401 - ... and the hint pooling layer

    import keras

    meta = json.loads((folder / META_FILE).read_text())
    model = keras.saving.load_model(folder / MODEL_FILE, compile=False, safe_mode=True)
    return Colorizer(model, spec_of(meta), int(meta["image_size"]))


def spec_of(meta: dict) -> InputSpec:
    """What a model folder's model.json says the network takes and gives."""
    return InputSpec(meta["gray"], meta["target"], float(meta.get("temperature", 1.0)),
                     float(meta.get("colour_boost", 0.0)), bool(meta.get("hints", False)))


def sample_grid(records: np.ndarray, predicted_bgr: np.ndarray, scale: int = 2) -> np.ndarray:
    """RGB uint8 picture, one row per sample: gray input | prediction | truth."""
    truth = colour.record_to_bgr(records)
    gray = np.repeat(records[..., colour.Y : colour.Y + 1], 3, axis=-1)
    return grid([gray, predicted_bgr, truth], scale)


def grid(columns: list[np.ndarray], scale: int = 2) -> np.ndarray:
    """Columns of same-sized BGR images (n, h, w, 3) -> one RGB picture with a row per image."""
    grid = cv2.vconcat([cv2.hconcat(list(row)) for row in zip(*columns)])
    if scale > 1:
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(grid, cv2.COLOR_BGR2RGB)
