"""The colorizer as an MLflow pyfunc: gray images in, colour images out (served by `mlflow models serve`).

Request (POST /invocations, JSON): {"inputs": [gray image, ...]} where each gray image is an h x w list of
0..255 integers (all images of one request share a size). Reply: {"predictions": [h x w x 3 RGB 0..255, ...]}.
Chroma is predicted at the model's resolution and combined with each image's full-resolution gray. A request of
more than MAX_REQUEST_PIXELS pixels in all is refused (HTTP 400): split big batches. A server with less memory
lowers the limit: MLFLOW_PYFUNC_INFERENCE_CONFIG='{"max_request_pixels": 12000000}'.

Logged as MLflow "models from code": the registry holds src/serving/serving_entry.py and src/, not a pickled object, so
loading `models:/colorizer@champion` runs this repository's code and Keras' safe-mode loader, no pickle.

The logged model also carries the network as ONNX (src/model/onnx_export.py) under MLflow's `onnx` flavour:
`mlflow.onnx.load_model(uri)` gives it to any ONNX tool, and this pyfunc runs it on onnxruntime (no TensorFlow in
the serving process) unless loaded with model_config={"runtime": "keras"} (for `mlflow models serve`, the environment
variable MLFLOW_PYFUNC_INFERENCE_CONFIG='{"runtime": "keras"}'). Versions logged before it run as Keras.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import cv2
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from src.core.paths import ROOT

logger = logging.getLogger(__name__)

ENTRY = Path(__file__).with_name("serving_entry.py")

ARTIFACT = "colorizer"
ONNX = "onnx"  # the artifact holding the network as ONNX, which the `onnx` flavour names too
MAX_REQUEST_PIXELS = 50_000_000  # about four 12 MP photos; the JSON of one is already ~50 MB


class ColorizerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from src.model import onnx_runtime
        from src.model.predict import META_FILE, load

        folder, exported = Path(context.artifacts[ARTIFACT]), context.artifacts.get(ONNX)
        config = context.model_config or {}
        self.runtime = config.get("runtime", "onnx")
        self.max_pixels = int(config.get("max_request_pixels", MAX_REQUEST_PIXELS))
        if exported and self.runtime == "onnx" and onnx_runtime.available():
            self.colorizer = onnx_runtime.load_file(Path(exported), json.loads((folder / META_FILE).read_text()))
        else:
            self.runtime = "keras"
            self.colorizer = load(folder)  # Keras safe mode: no code from the weights file

    def predict(self, context, model_input: np.ndarray, params=None):  # ndarray: validated by the signature
        gray = np.asarray(model_input)
        if gray.ndim == 4 and gray.shape[-1] == 1:
            gray = gray[..., 0]
        if gray.ndim != 3:
            raise MlflowException.invalid_parameter_value(f"expected gray images shaped (n, h, w), got {gray.shape}")
        if gray.size > self.max_pixels:
            raise MlflowException.invalid_parameter_value(
                f"request of {gray.size} pixels refused: at most {self.max_pixels} per request")
        gray = np.clip(gray, 0, 255).astype(np.uint8)
        return np.stack([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for bgr in self.colorizer.colorize(list(gray))])


class _WithOnnx:
    """The flavour module Model.log saves with: mlflow.pyfunc's, plus the `onnx` flavour naming the pyfunc's own
    copy of the ONNX file (one copy in the store)."""

    @staticmethod
    def save_model(path, mlflow_model, **kwargs):
        import onnx
        from mlflow.models.model import MLMODEL_FILE_NAME

        mlflow.pyfunc.save_model(path, mlflow_model=mlflow_model, **kwargs)
        copied = mlflow_model.flavors["python_function"]["artifacts"][ONNX]["path"]
        mlflow_model.add_flavor("onnx", onnx_version=onnx.__version__, data=copied,
                                providers=["CPUExecutionProvider"], onnx_session_options=None, code=None)
        mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))  # pyfunc's save_model wrote it without the flavour


def exported(model_dir: Path, dest: Path) -> Path | None:
    """The model folder's network as ONNX at `dest`, or None, with a warning, where onnxruntime cannot run the export
    (a mixed-precision model: tf2onnx writes float16 casts that onnxruntime refuses to load)."""
    from src.model.onnx_export import export_folder
    from src.model.onnx_runtime import OnnxNetwork

    try:
        export_folder(model_dir, dest)
        OnnxNetwork(dest).session  # noqa: B018  opening it is the check
    except Exception as exc:  # noqa: BLE001 - whatever the exporter or the runtime refuses, Keras still serves
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        logger.warning("registered without the ONNX flavour: its export does not run on onnxruntime (%s)", reason)
        return None
    return dest


def log(model_dir: Path, example: np.ndarray):
    """Log the pyfunc as models from code (src/serving/serving_entry.py, with src/) into the active run, with the
    network exported to ONNX beside it where onnxruntime runs the export (about 20 s); the ModelInfo."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from src.training.tracking import requirements

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = exported(model_dir, Path(tmp) / "model.onnx")
        artifacts = {ARTIFACT: str(model_dir)} | ({ONNX: str(onnx_file)} if onnx_file else {})
        return Model.log(
            artifact_path=None, name=ARTIFACT, flavor=_WithOnnx if onnx_file else mlflow.pyfunc,
            python_model=str(ENTRY), artifacts=artifacts,
            code_paths=[str(ROOT / "src")], signature=signature, input_example=example[:1],
            pip_requirements=requirements("onnxruntime"),
            model_config={"runtime": "onnx", "max_request_pixels": MAX_REQUEST_PIXELS},  # declared: a load may override
        )
