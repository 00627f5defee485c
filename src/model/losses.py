"""Losses and metrics in the target space: they encode the uint8 (H, S, V) truth on the fly (src/data/colour.py).

Registered as Keras serializables so a saved model reloads in safe mode without custom code.
"""
from __future__ import annotations

import keras
from keras import ops

from src.data import colour

HUBER_DELTA = 0.1  # target units (chroma spans [-1, 1]): quadratic near zero, linear for large colour errors


def encode_truth(hsv, target: str, stride: int = 1):
    """uint8 (n, h, w, 3) OpenCV H, S, V -> float32 (n, h/stride, w/stride, 2) encoded target.

    stride > 1: a model predicting at reduced resolution is scored against the mean target over each cell.
    """
    hsv = ops.cast(hsv, "float32")
    encoded = colour.encode_target(hsv[..., 0], hsv[..., 1], target, xp=ops, value=hsv[..., 2])
    return _pool(encoded, stride)


def _pool(x, stride: int):
    return x if stride == 1 else ops.average_pool(x, stride, strides=stride, padding="valid")


def as_chroma(y_pred, target: str):
    """The prediction as a point of the target space: bins' class scores become their mean chroma."""
    y_pred = ops.cast(y_pred, "float32")
    return colour.annealed_mean(y_pred, 1.0, xp=ops, target=target) if colour.is_bins(target) else y_pred


@keras.saving.register_keras_serializable(package="colorizer")
class TargetLoss(keras.losses.Loss):
    """Pixel loss (mse | l1 | huber) between prediction and the encoded truth; cross-entropy (ce) against soft
    labels for the bins target.

    saturation_weight w weighs each pixel by 1 + w * strength (S/255, or the |CrCb| length for cbcr, 0..1):
    colourful pixels count more, a common remedy for regression's pull towards gray (Zhang et al. 2016 reweight
    rare colours for the same reason).
    """

    def __init__(self, target: str = "chroma", kind: str = "mse", saturation_weight: float = 0.0, stride: int = 1,
                 class_weights: tuple[float, ...] | None = None, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{kind}_loss"), **kwargs)
        self.stride = stride  # the model's output stride (src.model.output_stride)
        self.class_weights = tuple(float(w) for w in class_weights) if class_weights is not None else None
        if kind not in ("mse", "l1", "huber", "ce"):
            raise ValueError(f"loss must be mse, l1, huber or ce, got {kind!r}")
        if (kind == "ce") != colour.is_bins(target):
            raise ValueError(f"loss ce goes with target bins or cbcr_bins (and only there), got loss {kind!r}, "
                             f"target {target!r}")
        self.target, self.kind, self.saturation_weight = target, kind, saturation_weight

    def call(self, y_true, y_pred):
        truth = encode_truth(y_true, self.target, self.stride)
        if self.kind == "ce":
            scores = ops.cast(y_pred, "float32")
            labels = colour.bin_labels(truth, ops, self.target)
            per_pixel = -ops.sum(labels * ops.log_softmax(scores, axis=-1), axis=-1)
            if self.class_weights is not None:  # rare (colourful) classes count more: see class_weights()
                per_pixel = per_pixel * ops.sum(labels * ops.convert_to_tensor(self.class_weights), axis=-1)
            return self._weighted(per_pixel, truth, y_true)
        err = ops.cast(y_pred, "float32") - truth
        if self.kind == "mse":
            per_pixel = ops.mean(ops.square(err), axis=-1)
        elif self.kind == "l1":
            per_pixel = ops.mean(ops.abs(err), axis=-1)
        else:
            a = ops.abs(err)
            per_pixel = ops.mean(ops.where(a < HUBER_DELTA, 0.5 * a * a, HUBER_DELTA * (a - 0.5 * HUBER_DELTA)), axis=-1)
        return self._weighted(per_pixel, truth, y_true)

    def _weighted(self, per_pixel, truth, y_true):
        if not self.saturation_weight:
            return per_pixel
        sat = _pool(ops.cast(y_true[..., 1:2], "float32"), self.stride)[..., 0]
        return per_pixel * (1.0 + self.saturation_weight * colour.colour_strength(truth, sat, self.target, ops))

    def get_config(self):
        return {**super().get_config(), "target": self.target, "kind": self.kind,
                "saturation_weight": self.saturation_weight, "stride": self.stride,
                "class_weights": list(self.class_weights) if self.class_weights is not None else None}


def class_weights(prior, mix: float):
    """Zhang et al. (2016) class rebalancing: w proportional to 1 / ((1 - mix) * prior + mix / k), scaled so that
    the prior's expected weight is 1. mix 1 weighs every class equally; towards 0, by inverse frequency (they use
    0.5). train.rebalance 0 turns it off."""
    import numpy as np

    w = 1.0 / ((1.0 - mix) * np.asarray(prior, np.float64) + mix / len(prior))
    return w / float(np.sum(prior * w))


@keras.saving.register_keras_serializable(package="colorizer")
class TargetRMSE(keras.metrics.Metric):
    """Root mean squared error over all pixels and both channels, in the target encoding."""

    def __init__(self, target: str = "chroma", name: str = "rmse", stride: int = 1, **kwargs):
        super().__init__(name=name, **kwargs)
        self.target, self.stride = target, stride
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        err = as_chroma(y_pred, self.target) - encode_truth(y_true, self.target, self.stride)
        self.total.assign_add(ops.sum(ops.square(err)))
        self.count.assign_add(ops.cast(ops.size(err), "float32"))

    def result(self):
        return ops.sqrt(ops.divide_no_nan(self.total, self.count))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "target": self.target, "stride": self.stride}
