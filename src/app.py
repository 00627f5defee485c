"""A local web page to colour photos: drop black-and-white (or colour) photos, compare, download.

    python -m src.app                                       # the released model (or a champion that beats it)
    python -m src.app --model models:/colorizer/3 --port 7861
    python -m src.app --host 0.0.0.0                        # reachable from your network: docs/serving.md

The same model and code path as `python -m src.colorize`: colour photos are made gray first, chroma is predicted
at the model's size and combined with the photo's own full-resolution luma. The vividness controls (bins models)
re-decode the network's stored outputs, so moving them runs no network. Besides the page, a plain HTTP API:
`curl -F photo=@old.jpg http://127.0.0.1:7860/api/colorize -o coloured.png`.
Needs the app extra: pip install -e ".[app]".
"""
# No `from __future__ import annotations`: FastAPI and Gradio read the handlers' annotations at run time.

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from src import colour, images, stamp
from src.choice import Chosen, choose
from src.colorize import output_names, positive
from src.predict import Colorizer

log = logging.getLogger(__name__)
MAX_UPLOAD_MB = 50


@dataclass(frozen=True)
class Loaded:
    """The model the page serves, why, and a link to its run in `mlflow ui` when one answers."""

    chosen: Chosen
    run_url: str = ""

    @property
    def colorizer(self) -> Colorizer:
        return self.chosen.colorizer

    def describe(self) -> str:
        run = f", run [{self.chosen.run_id}]({self.run_url})" if self.run_url else ""
        return f"{self.chosen.line()}{run}."


def load(spec: str | None, ui_url: str) -> Loaded:
    """`spec`: as `python -m src.colorize --model` takes it; None: the released model, or the registry's champion
    if it beat the release on the same images (src/choice.py)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from src import tracking

    chosen = choose(spec)
    uri = tracking.resolve_uri()
    base = uri if uri.startswith(("http://", "https://")) else ui_url
    if not (chosen.run_id and base and _reachable(base)):
        return Loaded(chosen)
    try:
        experiment = MlflowClient(uri).get_run(chosen.run_id).info.experiment_id
    except mlflow.exceptions.MlflowException:  # a models/ folder trained against another store
        return Loaded(chosen)
    return Loaded(chosen, f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{chosen.run_id}")


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5):
            return True
    except OSError:
        return False


# Full-resolution work costs about 12 bytes and 0.13 us of CPU per pixel on 2 cores (measured: 25 MP in 3.7 s and
# 0.3 GB, 50 MP in 6.6 s and 0.6 GB): with two workers, 50 MP keeps a server within about 1.2 GB of its idle size.
MAX_PIXELS = 50_000_000


def gray_photo(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An uploaded file's bytes -> its uint8 gray image, as colorize reads files; images.Skip says why not."""
    return cv2.cvtColor(images.decode_or_skip(data, max_pixels).bgr, cv2.COLOR_BGR2GRAY)


@dataclass
class Photo:
    name: str
    gray: np.ndarray  # full resolution
    scores: np.ndarray  # the network's raw outputs at the model's size


class Studio:
    """What the page does, without the page: colour uploads, re-decode them, write the downloads."""

    def __init__(self, loaded: Loaded, workdir: Path):
        self.loaded, self.workdir = loaded, workdir
        self.info = stamp.fields(loaded.chosen.name, loaded.chosen.version)  # every result's metadata

    def png(self, data: bytes) -> bytes:
        """An uploaded file's bytes -> the coloured PNG with its provenance; images.Skip says why not."""
        (bgr,) = self.loaded.colorizer.colorize([gray_photo(data)])
        return stamp.png_bytes(bgr, self.info)

    def colourise(self, paths: list[str]) -> tuple[list[Photo], list[str]]:
        """Uploaded files -> photos with the network's outputs, and one line per file that could not be read."""
        photos, problems = [], []
        names = output_names([Path(p) for p in paths])
        for path in paths:
            try:
                gray = gray_photo(images.read_bytes(Path(path)))
            except images.Skip as skip:
                problems.append(f"{Path(path).name}: {skip}")
                continue
            colorizer = self.loaded.colorizer
            photos.append(Photo(names[Path(path)], gray, colorizer.scores(colorizer.model_input([gray]))[0]))
        return photos, problems

    def render(self, photos: list[Photo], temperature: float, boost: float) -> tuple[list[np.ndarray], list[Path]]:
        """BGR results at full resolution and their PNG files (plus a zip when there are several)."""
        base = self.loaded.colorizer
        colorizer = dataclasses.replace(base, spec=dataclasses.replace(base.spec, temperature=temperature, boost=boost))
        out = self.workdir / uuid.uuid4().hex
        out.mkdir(parents=True)
        results, files = [], []
        for photo in photos:
            (bgr,) = colorizer.colorize([photo.gray], scores=photo.scores[None])
            (out / photo.name).write_bytes(stamp.png_bytes(bgr, self.info))
            results.append(bgr)
            files.append(out / photo.name)
        if len(files) > 1:
            with zipfile.ZipFile(out / "coloured.zip", "w") as archive:
                for f in files:
                    archive.write(f, f.name)
            files.append(out / "coloured.zip")
        return results, files


def rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)


def build(studio: Studio):
    """The Gradio page."""
    import gradio as gr

    from src.stages.download import sample_photos

    spec = studio.loaded.colorizer.spec
    bins = colour.is_bins(spec.target)

    def show(photos, temperature, boost, problems=()):
        results, files = studio.render(photos, temperature, boost)
        pairs = [(rgb(p.gray), rgb(r)) for p, r in zip(photos, results)]
        note = "\n".join(f"- skipped {line}" for line in problems)
        return pairs, pairs[0], [(b, p.name) for (_, b), p in zip(pairs, photos)], [str(f) for f in files], note

    def on_colourise(paths, temperature, boost):
        if not paths:
            raise gr.Error("Choose one or more photos first.")
        photos, problems = studio.colourise(paths)
        if not photos:
            raise gr.Error("No photo could be read: " + "; ".join(problems))
        pairs, first, gallery, files, note = show(photos, temperature, boost, problems)
        return photos, pairs, first, gallery, files, note

    def on_vividness(photos, temperature, boost):
        if not photos:
            return [], None, [], [], ""
        pairs, first, gallery, files, _ = show(photos, temperature, boost)
        return pairs, first, gallery, files, gr.skip()

    def on_select(pairs, evt: gr.SelectData):
        return pairs[evt.index]

    with gr.Blocks(title="colorizer", analytics_enabled=False) as page:  # people's photos: contact no one
        gr.Markdown(f"# Colour black-and-white photos\n{studio.loaded.describe()} Colour photos are made gray "
                    "first. Colour is predicted at the model's size and laid over each photo's own full-resolution "
                    "gray, exactly as `python -m src.colorize` does.")
        with gr.Row():
            upload = gr.File(label="Photos", file_count="multiple", file_types=["image"], type="filepath",
                             elem_id="photos")
            with gr.Column():
                gr.Markdown("Vividness controls decode a bins model's colour classes; this model predicts colour "
                            "directly.", visible=not bins)
                temperature = gr.Slider(0.2, 1.0, value=spec.temperature, step=0.01, visible=bins,
                                        label="Vividness: temperature (lower: bolder colour where the model is sure)")
                boost = gr.Slider(0.0, 16.0, value=spec.boost, step=0.5, visible=bins,
                                  label="Vividness: colour boost (higher: favours colourful over gray)")
                go = gr.Button("Colourise", variant="primary", elem_id="colourise")
        note = gr.Markdown(elem_id="note")
        slider = gr.ImageSlider(label="Before / after (drag)", type="numpy", format="png", elem_id="slider")
        gallery = gr.Gallery(label="Results: click one to compare it above", columns=4, height=260, object_fit="contain", format="png",
                             elem_id="gallery")
        downloads = gr.File(label="Download (PNG each, and a zip of all)", file_count="multiple", elem_id="downloads")
        photos, pairs = gr.State([]), gr.State([])
        gr.Examples([[[str(path)]] for path, _ in sample_photos()[:4]], inputs=upload, label="Sample photos")
        outputs = [pairs, slider, gallery, downloads, note]
        go.click(on_colourise, [upload, temperature, boost], [photos, *outputs], api_visibility="private")
        for control in (temperature, boost):
            control.release(on_vividness, [photos, temperature, boost], outputs, api_visibility="private")
        gallery.select(on_select, pairs, slider, api_visibility="private")
    return page


def api(studio: Studio, max_bytes: int, workers: int = 2, queue: int = 16):
    """FastAPI app: POST /api/colorize (multipart field `photo`) -> PNG; the page is mounted at /.

    The upload is counted while it arrives (chunked or not): past the limit it is refused and never reaches the disk
    in full. Image work runs on `workers` threads, never in the event loop, so the page answers meanwhile; beyond
    `queue` photos waiting or running, a request is told to retry (503) instead of piling up memory.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from fastapi import FastAPI, HTTPException, Request, Response

    app = FastAPI(title="colorizer")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="colorize")
    jobs = [0]  # photos accepted and not yet answered; touched only in the event loop

    @app.post("/api/colorize", response_class=Response)
    async def colorize(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > max_bytes + FORM_OVERHEAD:
            raise HTTPException(413, f"upload larger than {max_bytes} bytes")
        if jobs[0] >= queue:
            raise HTTPException(503, f"busy: {jobs[0]} photos in the queue; try again in a moment",
                                headers={"Retry-After": "5"})
        jobs[0] += 1
        try:
            name, data = await read_upload(request, max_bytes)
            return Response(await asyncio.get_running_loop().run_in_executor(pool, studio.png, data),
                            media_type="image/png")
        except images.Skip as skip:
            raise HTTPException(400, f"{name}: {skip}") from skip
        finally:
            jobs[0] -= 1

    return app


FORM_OVERHEAD = 64 * 2**10  # multipart boundaries and headers around the photo


async def read_upload(request, max_bytes: int) -> tuple[str, bytes]:
    """The multipart field `photo` (filename, bytes), counting bytes as they arrive: HTTP 413 past the limit."""
    from fastapi import HTTPException
    from starlette.formparsers import MultiPartException, MultiPartParser

    received = 0

    async def limited():
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + FORM_OVERHEAD:
                raise HTTPException(413, f"upload larger than {max_bytes} bytes")
            yield chunk

    try:
        form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=16).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"send the photo as the multipart field 'photo' ({exc.message})") from exc
    upload = form.get("photo")
    if upload is None or not hasattr(upload, "read"):
        raise HTTPException(400, "send the photo as the multipart field 'photo'")
    data = await upload.read(max_bytes + 1)
    await form.close()
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload larger than {max_bytes} bytes")
    return upload.filename or "photo", data


def port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be 1..65535, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="release, a model folder (e.g. models), a release .npz or an MLflow URI "
                                        "(default: the released model, or the registry's champion if it beats it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=port, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--max-upload-mb", type=positive, default=MAX_UPLOAD_MB, help="per file (default: %(default)s)")
    parser.add_argument("--mlflow-ui", default="http://127.0.0.1:5000",
                        help="`mlflow ui` to link the model's run to, when reachable (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="colorizer-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")  # read when Gradio is imported; removed on exit
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        try:
            import gradio as gr
            import uvicorn
            from mlflow.exceptions import MlflowException
        except ImportError:
            log.error('the web app needs its extra: pip install -e ".[app]"')
            return 1
        try:
            loaded = load(args.model, args.mlflow_ui)
        except (FileNotFoundError, OSError, ValueError, MlflowException) as exc:  # one line, no traceback
            log.error("cannot load model %s: %s", args.model or "release", exc)
            return 1
        studio = Studio(loaded, workdir / "results")
        app = gr.mount_gradio_app(api(studio, args.max_upload_mb * 2**20), build(studio), path="/",
                                  max_file_size=f"{args.max_upload_mb}mb", allowed_paths=[str(workdir)])
        log.info(loaded.describe())
        log.info("serving at http://%s:%d (Ctrl+C stops)", args.host, args.port)
        # uvicorn stops gracefully on SIGTERM, then re-raises it: as an exit, so the folder below is removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
