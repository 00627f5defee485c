"""A local web page to colour photos and films: drop black-and-white (or colour) photos, compare, download.

    python -m src.app                                       # the released model (or a champion that beats it)
    python -m src.app --model models:/colorizer/3 --port 7861
    python -m src.app --host 0.0.0.0                        # reachable from your network: docs/serving.md

The same model and code path as `python -m src.colorize`: colour photos are made gray first, chroma is predicted
at the model's size and combined with the photo's own full-resolution luma. The vividness controls (bins models)
re-decode the network's stored outputs, so moving them runs no network. With a hint model, click the photo to
give a colour where you know it (src/data/hints.py). Besides the page, a plain HTTP API:
`curl -F photo=@old.jpg http://127.0.0.1:7860/api/colorize -o coloured.png`, with hints
`-F 'hints=[{"x": 120, "y": 80, "colour": "#c03020"}]'` (x, y in pixels of the photo), and for a film
`curl -F video=@old.mp4 http://127.0.0.1:7860/api/colorize-video -o coloured.mp4` (at most FILM_SECONDS long and
FILM_PIXELS a frame, checked while it is read; the page's film section takes the same).
Needs the app extra: pip install -e ".[app]".
"""
# No `from __future__ import annotations`: FastAPI and Gradio read the handlers' annotations at run time.

import argparse
import dataclasses
import json
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

from src.colorize import output_names, positive
from src.data import colour, hints, images
from src.model.predict import Colorizer
from src.serving import stamp
from src.serving.choice import Chosen, choose
from src.video import film, streams

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


def load(spec: str | None, ui_url: str, runtime: str | None = None) -> Loaded:
    """`spec`: as `python -m src.colorize --model` takes it; None: the released model, or the registry's champion
    if it beat the release on the same images (src/serving/choice.py); `runtime`: as its --runtime."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from src.training import tracking

    chosen = choose(spec, runtime)
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


# Films are coloured at about 5 frames/s on 2 cores at 640x360 (docs/video.md): a minute of film is minutes of work.
FILM_SECONDS = 60
FILM_PIXELS = 1920 * 1080


@dataclass
class Photo:
    name: str
    gray: np.ndarray  # full resolution
    scores: np.ndarray  # the network's raw outputs at the model's size, for the photo's current hints
    given: list[hints.Hint] = dataclasses.field(default_factory=list)  # its colour hints


PREVIEW_SIDE = 1024  # the page shows hint results at most this long side; downloads are full resolution


class Studio:
    """What the page does, without the page: colour uploads, re-decode them, write the downloads."""

    def __init__(self, loaded: Loaded, workdir: Path):
        self.loaded, self.workdir = loaded, workdir
        self.info = stamp.fields(loaded.chosen.name, loaded.chosen.version)  # every result's metadata

    def png(self, data: bytes, hint_json: str = "") -> bytes:
        """An uploaded file's bytes (and its hints, JSON) -> the coloured PNG with its provenance; images.Skip
        says why a photo could not be read, ValueError what is wrong with the hints."""
        gray = gray_photo(data)
        given = self.parse_hints(hint_json, gray.shape) if hint_json else []
        (bgr,) = self.loaded.colorizer.colorize([gray], given=[given])
        return stamp.png_bytes(bgr, self.info | hint_fields(given))

    def colour_film(self, source: Path, out: Path, progress=lambda done, total: None) -> Path:
        """A video file -> `out`, its coloured MP4 (atomically), as `python -m src.colorize` colours it, within the
        page's limits; streams.BadVideo says why not. `progress(frames done, frames)` after each frame."""
        clip = streams.scan(source, FILM_PIXELS, max_seconds=FILM_SECONDS)
        done = [0]

        def step(n: int) -> None:
            done[0] += n
            progress(done[0], clip.frames)

        film.colour_clip(self.loaded.colorizer, clip, out, stamp.video_fields(self.info), progress=step)
        return out

    def parse_hints(self, raw, shape: tuple[int, int]) -> list[hints.Hint]:
        colorizer = self.loaded.colorizer
        given = hints.parse(raw, shape[1], shape[0], colorizer.spec.target)
        if given and not colorizer.spec.hints:
            raise ValueError(f"{self.loaded.chosen.name} takes no hints: colour without them or choose a hint model")
        return given

    def rehint(self, photo: Photo, given: list[hints.Hint]) -> Photo:
        """The photo with the network's outputs for these hints (the vividness controls re-decode them)."""
        colorizer = self.loaded.colorizer
        maps = colorizer.hint_maps([photo.gray], [given])
        scores = colorizer.scores(colorizer.model_input([photo.gray]), hint_maps=maps)[0]
        return dataclasses.replace(photo, scores=scores, given=list(given))

    def preview(self, photo: Photo, temperature: float, boost: float) -> tuple[np.ndarray, float]:
        """The photo's result at most PREVIEW_SIDE px (BGR), and its scale from the photo."""
        scale = min(1.0, PREVIEW_SIDE / max(photo.gray.shape))
        small = photo.gray if scale == 1 else cv2.resize(photo.gray, None, fx=scale, fy=scale,
                                                          interpolation=cv2.INTER_AREA)
        (bgr,) = self.decoding(temperature, boost).colorize([small], scores=photo.scores[None])
        return bgr, scale

    def decoding(self, temperature: float, boost: float) -> Colorizer:
        base = self.loaded.colorizer
        return dataclasses.replace(base, spec=dataclasses.replace(base.spec, temperature=temperature, boost=boost))

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
        colorizer = self.decoding(temperature, boost)
        out = self.workdir / uuid.uuid4().hex
        out.mkdir(parents=True)
        results, files = [], []
        for photo in photos:
            (bgr,) = colorizer.colorize([photo.gray], scores=photo.scores[None])
            (out / photo.name).write_bytes(stamp.png_bytes(bgr, self.info | hint_fields(photo.given)))
            results.append(bgr)
            files.append(out / photo.name)
        if len(files) > 1:
            with zipfile.ZipFile(out / "coloured.zip", "w") as archive:
                for f in files:
                    archive.write(f, f.name)
            files.append(out / "coloured.zip")
        return results, files


def hint_fields(given: list[hints.Hint]) -> dict[str, str]:
    """The metadata text of a result coloured with these hints (stamp.fields says "none" without)."""
    return {"Hints": json.dumps(hints.described(given))} if given else {}


def marked(bgr: np.ndarray, given: list[hints.Hint], scale: float) -> np.ndarray:
    """The preview with each hint drawn as a dot of its colour, ringed so it shows on any background."""
    out = bgr.copy()
    radius = max(4, max(bgr.shape[:2]) // 80)
    for h in given:
        centre = (int(h.x * scale), int(h.y * scale))
        r, g, b = hints.hex_rgb(h.rgb)
        cv2.circle(out, centre, radius + 2, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(out, centre, radius + 1, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, centre, radius - 1, (b, g, r), -1, cv2.LINE_AA)
    return out


def picker_hex(value: str) -> str:
    """Gradio's colour picker value ('#rrggbb', or 'rgb(r, g, b)' / 'rgba(...)') -> '#rrggbb'."""
    value = (value or "").strip()
    if value.startswith("rgb"):
        r, g, b = (round(float(v)) for v in value[value.index("(") + 1 : value.index(")")].split(",")[:3])
        return f"#{r:02x}{g:02x}{b:02x}"
    return "#" + "{:02x}{:02x}{:02x}".format(*hints.hex_rgb(value))


def table_rows(rows) -> list[list]:
    """The hint table's value (a pandas DataFrame, or lists) -> its non-empty rows."""
    values = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
    return [row for row in values if any(v not in (None, "") for v in row)]


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

    def on_hints_changed(photos, drawn, temperature, boost):
        """The full-resolution redraw chained after each hint edit, skipped when the hints are those already drawn:
        a no-op edit (the picker set by the page after a click) would otherwise render again and race the first."""
        now = [temperature, boost, [[(h.x, h.y, h.rgb) for h in photo.given] for photo in photos]]
        if now == drawn:
            return (gr.skip(),) * 6
        return *on_vividness(photos, temperature, boost), now

    def on_select(photos, pairs, temperature, boost, evt: gr.SelectData):
        return pairs[evt.index], evt.index, *guided(photos, evt.index, temperature, boost)

    def guided(photos, current, temperature, boost, selected=None):
        """The guide view (the current photo's result with its hints marked), its hint table and the picker."""
        photo = photos[current]
        bgr, scale = studio.preview(photo, temperature, boost)
        rows = [[round(h.x), round(h.y), h.rgb] for h in photo.given]
        picker = photo.given[selected].rgb if selected is not None and selected < len(photo.given) else gr.skip()
        return rgb(marked(bgr, photo.given, scale)), rows, picker

    def with_hints(photos, current, given, temperature, boost, selected=None):
        photos = list(photos)
        photos[current] = studio.rehint(photos[current], given)
        return photos, *guided(photos, current, temperature, boost, selected)

    def on_guide_click(photos, current, temperature, boost, evt: gr.SelectData):
        if not photos:
            raise gr.Error("Colourise a photo first.")
        photo = photos[current]
        bgr, scale = studio.preview(photo, temperature, boost)
        px, py = (min(int(v), side - 1) for v, side in zip(evt.index, bgr.shape[1::-1]))
        b, g, r = (int(v) for v in bgr[py, px])  # the picker starts at the model's colour there
        hint = hints.Hint(min(px / scale, photo.gray.shape[1] - 1), min(py / scale, photo.gray.shape[0] - 1),
                          hints.chroma_of((b, g, r), spec.target), f"#{r:02x}{g:02x}{b:02x}")
        given = [*photo.given, hint]
        return *with_hints(photos, current, given, temperature, boost, len(given) - 1), len(given) - 1

    def on_pick(photos, current, selected, picked, temperature, boost):
        if not photos or selected is None or selected >= len(photos[current].given):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        hex_colour = picker_hex(picked)
        given = list(photos[current].given)
        if hex_colour == given[selected].rgb:  # the page set the picker to the hint's colour: nothing to do
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        r, g, b = hints.hex_rgb(hex_colour)
        given[selected] = dataclasses.replace(given[selected], chroma=hints.chroma_of((b, g, r), spec.target),
                                              rgb=hex_colour)
        return with_hints(photos, current, given, temperature, boost)

    def on_table(photos, current, rows, temperature, boost):
        """Edited rows: a changed x or y moves a hint, a deleted row removes it."""
        if not photos:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        table = [dict(zip(("x", "y", "colour"), row)) for row in table_rows(rows)]
        shape = photos[current].gray.shape
        try:
            given = studio.parse_hints(table, shape)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return with_hints(photos, current, given, temperature, boost)

    def on_remove(photos, current, selected, temperature, boost):
        if not photos or not photos[current].given:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), None
        given = list(photos[current].given)
        given.pop(selected if selected is not None and selected < len(given) else -1)
        return *with_hints(photos, current, given, temperature, boost), None

    def on_clear(photos, current, temperature, boost):
        if not photos:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), None
        return *with_hints(photos, current, [], temperature, boost), None

    def on_film(path, progress=gr.Progress()):
        if not path:
            raise gr.Error("Choose a video first.")
        out = studio.workdir / uuid.uuid4().hex / output_names([Path(path)])[Path(path)]
        try:
            studio.colour_film(Path(path), out, lambda done, total: progress((done, total), unit="frames"))
        except streams.BadVideo as exc:
            raise gr.Error(f"{Path(path).name}: {exc}") from None
        return str(out), str(out)

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
        gallery = gr.Gallery(label="Results: click one to compare it above", columns=4, height=260,
                             object_fit="contain", format="png", elem_id="gallery")
        with gr.Row(visible=spec.hints):
            guide = gr.Image(label="Colour hints: click the photo where you know the colour", type="numpy",
                             format="png", interactive=False, elem_id="guide")
            with gr.Column():
                picker = gr.ColorPicker(label="Colour of the selected hint (starts at the model's)",
                                        elem_id="hint-colour")
                table = gr.Dataframe(headers=["x", "y", "colour"], datatype=["number", "number", "str"],
                                     column_count=(3, "fixed"), interactive=True, label="Hints (edit x, y to move one)",
                                     elem_id="hints")
                with gr.Row():
                    remove = gr.Button("Remove the selected hint", elem_id="remove-hint")
                    clear = gr.Button("Clear hints", elem_id="clear-hints")
        downloads = gr.File(label="Download (PNG each, and a zip of all)", file_count="multiple", elem_id="downloads")
        photos, pairs, current, selected = gr.State([]), gr.State([]), gr.State(0), gr.State(None)
        drawn = gr.State(None)  # what the downloads were last rendered with, by on_hints_changed
        gr.Examples([[[str(path)]] for path, _ in sample_photos()[:4]], inputs=upload, label="Sample photos")
        with gr.Column(elem_id="films"):
            gr.Markdown(f"## Colour a film\nA black-and-white film (or a colour one, made gray first), up to "
                        f"{FILM_SECONDS} s and {FILM_PIXELS:,} pixels a frame: every frame coloured, the colour "
                        "carried along the motion within each shot, the sound kept.")
            film_in = gr.Video(label="Film", sources=["upload"], elem_id="film")
            film_go = gr.Button("Colour the film", variant="primary", elem_id="colour-film")
            film_out = gr.Video(label="Coloured", interactive=False, elem_id="film-out")
            film_file = gr.File(label="Download", elem_id="film-download")
            film_go.click(on_film, [film_in], [film_out, film_file], api_visibility="private")
        outputs = [pairs, slider, gallery, downloads, note]
        guided_outputs = [guide, table, picker]
        redraw = dict(fn=on_hints_changed, inputs=[photos, drawn, temperature, boost], outputs=[*outputs, drawn],
                      api_visibility="private")  # the downloads follow the hints at full resolution
        private = dict(api_visibility="private")
        go.click(on_colourise, [upload, temperature, boost], [photos, *outputs], **private).then(
            lambda photos, t, b: (0, None, *guided(photos, 0, t, b)) if photos else (0, None, None, [], gr.skip()),
            [photos, temperature, boost], [current, selected, *guided_outputs], **private)
        for control in (temperature, boost):
            control.release(on_vividness, [photos, temperature, boost], outputs, **private).then(
                lambda photos, i, t, b: guided(photos, i, t, b) if photos else (None, [], gr.skip()),
                [photos, current, temperature, boost], guided_outputs, **private)
        gallery.select(on_select, [photos, pairs, temperature, boost], [slider, current, *guided_outputs], **private)
        guide.select(on_guide_click, [photos, current, temperature, boost], [photos, *guided_outputs, selected],
                     **private).then(**redraw)
        picker.change(on_pick, [photos, current, selected, picker, temperature, boost], [photos, *guided_outputs],
                     **private).then(**redraw)
        table.input(on_table, [photos, current, table, temperature, boost], [photos, *guided_outputs],
                    **private).then(**redraw)
        remove.click(on_remove, [photos, current, selected, temperature, boost], [photos, *guided_outputs, selected],
                     **private).then(**redraw)
        clear.click(on_clear, [photos, current, temperature, boost], [photos, *guided_outputs, selected],
                    **private).then(**redraw)
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
    jobs = [0]  # uploads accepted and not yet answered; touched only in the event loop

    def admit(request: Request) -> None:
        """Refuse before reading anything: a declared size over the limit (413), a full queue (503)."""
        if int(request.headers.get("content-length") or 0) > max_bytes + FORM_OVERHEAD:
            raise HTTPException(413, f"upload larger than {max_bytes} bytes")
        if jobs[0] >= queue:
            raise HTTPException(503, f"busy: {jobs[0]} jobs in the queue; try again in a moment",
                                headers={"Retry-After": "5"})
        jobs[0] += 1

    @app.post("/api/colorize", response_class=Response)
    async def colorize(request: Request) -> Response:
        admit(request)
        try:
            name, data, hint_json = await read_upload(request, max_bytes)
            return Response(await asyncio.get_running_loop().run_in_executor(pool, studio.png, data, hint_json),
                            media_type="image/png")
        except images.Skip as skip:
            raise HTTPException(400, f"{name}: {skip}") from skip
        except ValueError as exc:  # the hints
            raise HTTPException(400, f"hints: {exc}") from exc
        finally:
            jobs[0] -= 1

    @app.post("/api/colorize-video", response_class=Response)
    async def colorize_video(request: Request) -> Response:
        admit(request)
        try:
            name, data, _ = await read_upload(request, max_bytes, field="video")
            video = await asyncio.get_running_loop().run_in_executor(pool, film_bytes, studio, data)
            return Response(video, media_type="video/mp4")
        except streams.BadVideo as exc:
            raise HTTPException(400, f"{name}: {exc}") from exc
        finally:
            jobs[0] -= 1

    return app


def film_bytes(studio: Studio, data: bytes) -> bytes:
    """An uploaded video's bytes -> the coloured MP4's, through files removed afterwards."""
    folder = studio.workdir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        (folder / "upload").write_bytes(data)
        return studio.colour_film(folder / "upload", folder / "coloured.mp4").read_bytes()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FORM_OVERHEAD = 64 * 2**10  # multipart boundaries and headers around the photo


async def read_upload(request, max_bytes: int, field: str = "photo") -> tuple[str, bytes, str]:
    """The multipart file `field` (filename, bytes) and the optional text field `hints` (JSON), counting bytes as
    they arrive: HTTP 413 past the limit."""
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
        raise HTTPException(400, f"send the {field} as the multipart field '{field}' ({exc.message})") from exc
    upload = form.get(field)
    if upload is None or not hasattr(upload, "read"):
        raise HTTPException(400, f"send the {field} as the multipart field '{field}'")
    data = await upload.read(max_bytes + 1)
    hint_json = form.get("hints") or ""
    await form.close()
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload larger than {max_bytes} bytes")
    if not isinstance(hint_json, str):
        raise HTTPException(400, "send the hints as a text field 'hints' (JSON), not a file")
    return upload.filename or field, data, hint_json


def port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be 1..65535, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="release, a model folder (e.g. models), a release .npz or an MLflow URI "
                                        "(default: the released model, or the registry's champion if it beats it)")
    parser.add_argument("--runtime", choices=("onnx", "keras"),
                        help="how the released model runs: onnx (onnxruntime; the default where it is installed) or keras")
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
            loaded = load(args.model, args.mlflow_ui, args.runtime)
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
