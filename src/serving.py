"""The colorizer as an MLflow pyfunc: gray images in, colour images out (served by `mlflow models serve`).

Request (POST /invocations, JSON): {"inputs": [gray image, ...]} where each gray image is an h x w list of
0..255 integers (all images of one request share a size). Reply: {"predictions": [h x w x 3 RGB 0..255, ...]}.
Chroma is predicted at the model's resolution and combined with each image's full-resolution gray.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import mlflow
import numpy as np

from src.paths import ROOT

ARTIFACT = "colorizer"


class ColorizerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from src.predict import load

        self.colorizer = load(context.artifacts[ARTIFACT])  # Keras safe mode: no code from the weights file

    def predict(self, context, model_input, params=None):
        gray = np.asarray(model_input)
        if gray.ndim == 4 and gray.shape[-1] == 1:
            gray = gray[..., 0]
        if gray.ndim != 3:
            raise ValueError(f"expected gray images shaped (n, h, w), got {gray.shape}")
        gray = np.clip(gray, 0, 255).astype(np.uint8)
        return np.stack([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) for bgr in self.colorizer.colorize(list(gray))])


def log(model_dir: Path, example: np.ndarray):
    """Log the pyfunc (with src/ as its code) into the active run; returns the ModelInfo."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from src.tracking import requirements

    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]))
    return mlflow.pyfunc.log_model(
        name=ARTIFACT, python_model=ColorizerModel(), artifacts={ARTIFACT: str(model_dir)},
        code_paths=[str(ROOT / "src")], signature=signature, input_example=example[:1],
        pip_requirements=requirements(),
    )
