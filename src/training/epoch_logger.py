"""MLflow's per-epoch logging, as the Keras callback that training and tuning pass to fit."""
from __future__ import annotations

import keras
import mlflow


class EpochLogger(keras.callbacks.Callback):
    """Per-epoch metrics, and every `every` epochs a gray | prediction | truth grid of fixed validation images."""

    def __init__(self, samples=(), colorize=None, every: int = 1):
        super().__init__()
        self.samples, self.colorize, self.every = samples, colorize, max(every, 1)

    def on_epoch_end(self, epoch, logs=None):
        mlflow.log_metrics({k: float(v) for k, v in (logs or {}).items()}, step=epoch)
        if self.colorize and epoch % self.every == 0 and len(self.samples):
            from src.model.predict import sample_grid

            mlflow.log_image(sample_grid(self.samples, self.colorize(self.model, self.samples)), key="samples",
                             step=epoch)
