"""The colorizer as an MLflow pyfunc: gray images in, colour images out (served by `mlflow models serve`).

Request (POST /invocations, JSON): {"inputs": [gray image, ...]} where each gray image is an h x w list of
0..255 integers (all images of one request share a size). Reply: {"predictions": [h x w x 3 RGB 0..255, ...]}.
Chroma is predicted at the model's resolution and combined with each image's full-resolution gray. A request of
more than MAX_REQUEST_PIXELS pixels in all is refused (HTTP 400): split big batches.

Logged as MLflow "models from code": the registry holds src/serving/serving_entry.py and src/, not a pickled object, so
loading `models:/colorizer@champion` runs this repository's code and Keras' safe-mode loader, no pickle.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from src.core.paths import ROOT

ENTRY = Path(__file__).with_name("serving_entry.py")

ARTIFACT = "colorizer"
MAX_REQUEST_PIXELS = 50_000_000  # about four 12 MP photos; the JSON of one is already ~50 MB


class ColorizerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from src.model.predict import load

        self.colorizer = load(context.artifacts[ARTIFACT])  # Keras safe mode: no code from the weights file

    def predict(self, context, model_input: np.ndarray, params=None):  # ndarray: validated by the signature
        gray = np.asarray(model_input)
        if gray.ndim == 4 and gray.shape[-1] == 1:
            gray = gray[..., 0]
        if gray.ndim != 3:
            raise MlflowException.invalid_parameter_value(f"expected gray images shaped (n, h, w), got {gray.shape}")
        if gray.size > MAX_REQUEST_PIXELS:
            raise MlflowException.invalid_parameter_value(
                f"request of {gray.size} pixels refused: at most {MAX_REQUEST_PIXELS} per request")
        gray = np.clip(gray, 0, 255).astype(np.uint8)
        return np.stack([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for bgr in self.colorizer.colorize(list(gray))])


def log(model_dir: Path, example: np.ndarray):
    """Log the pyfunc as models from code (src/serving/serving_entry.py, with src/) into the active run; the ModelInfo."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from src.training.tracking import requirements

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]))
    return mlflow.pyfunc.log_model(
        name=ARTIFACT, python_model=str(ENTRY), artifacts={ARTIFACT: str(model_dir)},
        code_paths=[str(ROOT / "src")], signature=signature, input_example=example[:1],
        pip_requirements=requirements(),
    )
