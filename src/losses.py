"""Losses and metrics in the target space: they encode the uint8 (H, S, V) truth on the fly (src/colour.py).

Registered as Keras serializables so a saved model reloads in safe mode without custom code.
"""
from __future__ import annotations

import keras
from keras import ops

from src import colour

HUBER_DELTA = 0.1  # target units (chroma spans [-1, 1]): quadratic near zero, linear for large colour errors


def encode_truth(hsv, target: str):
    """uint8 (..., 3) OpenCV H, S, V -> float32 (..., 2) encoded target."""
    hsv = ops.cast(hsv, "float32")
    return colour.encode_target(hsv[..., 0], hsv[..., 1], target, xp=ops, value=hsv[..., 2])


@keras.saving.register_keras_serializable(package="colorizer")
class TargetLoss(keras.losses.Loss):
    """Pixel loss (mse | l1 | huber) between prediction and the encoded truth.

    saturation_weight w weighs each pixel by 1 + w * strength (S/255, or the |CrCb| length for cbcr, 0..1):
    colourful pixels count more, a common remedy for regression's pull towards gray (Zhang et al. 2016 reweight
    rare colours for the same reason).
    """

    def __init__(self, target: str = "chroma", kind: str = "mse", saturation_weight: float = 0.0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{kind}_loss"), **kwargs)
        if kind not in ("mse", "l1", "huber"):
            raise ValueError(f"loss must be mse, l1 or huber, got {kind!r}")
        self.target, self.kind, self.saturation_weight = target, kind, saturation_weight

    def call(self, y_true, y_pred):
        truth = encode_truth(y_true, self.target)
        err = ops.cast(y_pred, "float32") - truth
        if self.kind == "mse":
            per_pixel = ops.mean(ops.square(err), axis=-1)
        elif self.kind == "l1":
            per_pixel = ops.mean(ops.abs(err), axis=-1)
        else:
            a = ops.abs(err)
            per_pixel = ops.mean(ops.where(a < HUBER_DELTA, 0.5 * a * a, HUBER_DELTA * (a - 0.5 * HUBER_DELTA)), axis=-1)
        if self.saturation_weight:
            sat = ops.cast(y_true[..., 1], "float32")
            per_pixel = per_pixel * (1.0 + self.saturation_weight * colour.colour_strength(truth, sat, self.target, ops))
        return per_pixel

    def get_config(self):
        return {**super().get_config(), "target": self.target, "kind": self.kind,
                "saturation_weight": self.saturation_weight}


@keras.saving.register_keras_serializable(package="colorizer")
class TargetRMSE(keras.metrics.Metric):
    """Root mean squared error over all pixels and both channels, in the target encoding."""

    def __init__(self, target: str = "chroma", name: str = "rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.target = target
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        err = ops.cast(y_pred, "float32") - encode_truth(y_true, self.target)
        self.total.assign_add(ops.sum(ops.square(err)))
        self.count.assign_add(ops.cast(ops.size(err), "float32"))

    def result(self):
        return ops.sqrt(ops.divide_no_nan(self.total, self.count))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "target": self.target}
