"""One training function for the train stage and the tuner: data, model, callbacks, fit, best weights.

Core code only: no MLflow here; callers pass extra callbacks (tracking, pruning) and read the returned result.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from src.core import determinism
from src.core.params import TrainParams
from src.core.paths import ROOT
from src.data import colour, hints
from src.data.pipeline import InputSpec, dataset, folder_shares
from src.data.shards import ShardSet
from src.model import efficientnet_lite
from src.model.losses import TargetLoss, TargetRMSE, class_weights
from src.model.network import HINT_PREFIX, build_model, output_stride

log = logging.getLogger(__name__)
MONITORS = ("val_rmse", "val_loss")


@dataclass
class FitResult:
    model: keras.Model
    history: pd.DataFrame  # one row per epoch, including epochs run before a resume
    best_epoch: int  # 0-based, by `monitor`
    monitor: str  # train.monitor
    wall_s: float
    img_per_s: float  # training images per second (validation and the compiling first step excluded); NaN if none

    def best(self, column: str) -> float:
        return float(self.history[column].iloc[self.best_epoch])

    @property
    def best_val_rmse(self) -> float:
        return self.best("val_rmse")

    @property
    def best_value(self) -> float:
        """The monitor at the best epoch: what tuning minimises."""
        return self.best(self.monitor)

    def metrics(self) -> dict[str, float]:
        last = self.history.iloc[-1]
        return {"best_val_rmse": self.best_val_rmse, "best_val_loss": self.best("val_loss"),
                "best_epoch": self.best_epoch, "epochs": len(self.history), "final_rmse": float(last["rmse"]),
                "train_img_per_s": self.img_per_s, "wall_s": self.wall_s, "params": self.model.count_params()}


class NaNGuard(keras.callbacks.Callback):
    """Stop with a clear error (not silently, as TerminateOnNaN does) when the loss stops being finite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss} at batch {batch}: lower train.learning_rate or check the data"
            )


class Throughput(keras.callbacks.Callback):
    """Adds img_per_s to each epoch's logs: training images per second over the training steps (validation
    excluded), without the run's first step, which traces and compiles the graph (with XLA: seconds to minutes).
    NaN for an epoch that ran no other step."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.rates: list[float] = []
        self.compiled = False

    def on_epoch_begin(self, epoch, logs=None):
        self.seconds, self.batches = 0.0, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.compiled:
            self.seconds += time.perf_counter() - self.start
            self.batches += 1
        self.compiled = True

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(self.batches * self.batch_size / self.seconds if self.batches else float("nan"))
        if logs is not None:
            logs["img_per_s"] = self.rates[-1]


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the epoch during which `seconds` of wall time ran out (equal-budget comparisons)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            log.info("time budget of %.0f s spent after epoch %d", self.seconds, epoch + 1)
            self.model.stop_training = True


def configure(p: TrainParams) -> None:
    """Seeds, determinism (src/core/determinism.py), devices and precision; call before building models."""
    determinism.configure(p.seed)
    if p.devices > 1:
        split_cpu(p.devices)
    keras.config.set_dtype_policy("mixed_float16" if p.mixed_precision else "float32")


def split_cpu(n: int) -> None:
    """On a machine without GPUs, present the CPU as `n` logical devices (TensorFlow backend only)."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError("train.devices > 1 without GPUs needs the TensorFlow backend")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise RuntimeError(f"train.devices={n}: TensorFlow already started with "
                               f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); set it in a fresh process") from exc


def distribution_scope():
    """MirroredStrategy over several GPUs, or over the logical CPUs of split_cpu; else a no-op."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        if len(devices) > 1:
            log.info("training on %d devices with MirroredStrategy: %s", len(devices), ", ".join(devices))
            return tf.distribute.MirroredStrategy(devices).scope()
    return contextlib.nullcontext()


class EncoderLR:
    """Optimizer mixin: the encoder's variables step at `encoder_scale` x the learning rate.

    encoder_scale is an optimizer variable (0 while the encoder waits), so BackupAndRestore keeps it.
    """

    def __init__(self, *args, encoder_variables=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._encoder_variables = list(encoder_variables)

    def build(self, var_list):
        super().build(var_list)
        self.encoder_scale = self.add_variable((), initializer="zeros", name="encoder_scale")
        self._encoder_indices = {self._get_variable_index(v) for v in self._encoder_variables}

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._encoder_indices:
            learning_rate = learning_rate * self.encoder_scale
        return super().update_step(gradient, variable, learning_rate)


class EncoderSchedule(keras.callbacks.Callback):
    """Fine-tuning: the encoder waits `frozen_epochs` while the new decoder settles, then learns at `scale`."""

    def __init__(self, frozen_epochs: int, scale: float):
        super().__init__()
        self.frozen_epochs, self.scale = frozen_epochs, scale

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer  # built by compile_model
        inner = getattr(opt, "inner_optimizer", opt)  # mixed precision wraps it in a LossScaleOptimizer
        inner.encoder_scale.assign(0.0 if epoch < self.frozen_epochs else self.scale)


def fine_tunes_an_encoder(p: TrainParams) -> bool:
    """The pretrained encoder, or a hint model's copy of it, trains (at encoder_lr, after encoder_frozen_epochs)."""
    return p.encoder_trainable or p.model.hint_encoder == "copy"  # build_model refuses a copy without hints


def set_encoder_trainable(model: keras.Model, trainable: bool, encoder: keras.Model | None = None) -> list:
    """Freeze a pretrained encoder (by default the model's; or a hint encoder copy), or fine-tune it with its
    BatchNorm statistics frozen (batches here are small).

    Returns the encoder's trainable variables (none when frozen or absent)."""
    encoder = encoder or efficientnet_lite.find(model)
    if encoder is None:
        return []
    encoder.trainable = trainable
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return encoder.trainable_variables


def make_optimizer(p: TrainParams, total_steps: int, encoder_variables=()) -> keras.optimizers.Optimizer:
    lr = p.learning_rate
    if p.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(p.learning_rate, decay_steps=max(total_steps, 1))
    elif p.lr_schedule != "constant":
        raise ValueError(f"train.lr_schedule must be constant or cosine, got {p.lr_schedule!r}")
    optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}
    if p.optimizer not in optimizers:
        raise ValueError(f"train.optimizer must be one of {sorted(optimizers)}, got {p.optimizer!r}")
    options = {"use_ema": True, "ema_momentum": p.ema} if p.ema else {}
    base = optimizers[p.optimizer]
    if fine_tunes_an_encoder(p):
        options["encoder_variables"] = encoder_variables
        base = type(f"{base.__name__}EncoderLR", (EncoderLR, base), {})
    return base(learning_rate=lr, **options)


def class_prior(shards: ShardSet, target: str = "bins", limit: int = 512, stride: int = 4) -> np.ndarray:
    """Bins targets: how often each chroma class occurs in the training split (soft labels of a pixel sample), (k,)."""
    records = shards.load("train", limit=limit)[:, ::stride, ::stride]
    chroma = colour.record_target(records, target).reshape(-1, 2)
    # in chunks: one pass over (pixels, classes, 2) would move gigabytes through memory, 2x slower
    parts = np.array_split(chroma, max(1, len(chroma) // 16384))
    labels = np.concatenate([colour.bin_labels(part, target=target) for part in parts])
    return labels.mean(axis=0)


def start_at_prior(model: keras.Model, prior: np.ndarray) -> None:
    """Set the head's bias to the log class prior: with few steps an epoch, learning the mostly-gray prior from a
    uniform start takes most of a short run (Karpathy, "A Recipe for Training Neural Networks": init well)."""
    for head in (layer for layer in model.layers if layer.name in ("head", HINT_PREFIX + "head")):
        kernel, _ = head.get_weights()
        head.set_weights([kernel, np.log(prior + 1e-6).astype(np.float32)])


def compile_model(p: TrainParams, image_size: int, total_steps: int, prior: np.ndarray | None = None) -> keras.Model:
    """The model, compiled; `prior` (bins: class_prior) starts the head there and feeds train.rebalance;
    train.init_from starts it from a release's weights instead."""
    separate = p.model.hints and p.model.hint_decoder == "separate"
    if separate and (not p.init_from or p.encoder_trainable):
        raise ValueError("model.hint_decoder separate trains only the hint decoder beside a trained model: set "
                         "train.init_from (e.g. release/colorizer-lite0-v1.npz) and train.encoder_trainable: false")
    if p.hint_init_from and not separate:
        raise ValueError("train.hint_init_from starts a separate hint path: set model.hints: true and "
                         "model.hint_decoder: separate")
    from src.model import release  # a release starts the model or its hint path (train.init_from, hint_init_from)

    model = build_model(p.model, image_size)
    if prior is not None:
        start_at_prior(model, prior)
    if p.init_from:
        started = release.warm_start(model, ROOT / p.init_from, copy_hint_decoder=p.hint_start == "copy")
        log.info("started %d of %d variables from %s", started, len(model.weights), p.init_from)
    if p.hint_init_from:
        started = release.warm_start_hint_path(model, ROOT / p.hint_init_from)
        log.info("started the hint path's %d variables from %s", started, p.hint_init_from)
    encoder_variables = set_encoder_trainable(model, p.encoder_trainable)
    if separate:  # the plain path stays the model it was started from
        for layer in model.layers:
            layer.trainable = layer.name.startswith(HINT_PREFIX)
        if p.model.hint_encoder == "copy":
            copy = model.get_layer(HINT_PREFIX + p.model.encoder)
            encoder_variables = set_encoder_trainable(model, True, copy)
    weights = class_weights(prior, p.rebalance) if p.rebalance and prior is not None else None
    model.compile(
        optimizer=make_optimizer(p, total_steps, encoder_variables),
        loss=TargetLoss(p.model.target, p.loss, p.saturation_weight, output_stride(p.model), weights),
        metrics=[TargetRMSE(p.model.target, stride=output_stride(p.model))],
        jit_compile=p.jit_compile,
    )
    # now, not lazily at the first step: creating variables there makes tf.function trace the train step twice
    # (a third of a small run's time)
    model.optimizer.build(model.trainable_variables)
    return model


def fit(p: TrainParams, shards: ShardSet, workdir: Path, callbacks: list | tuple = (), verbose: int = 2,
        resumable: bool = True) -> FitResult:
    """Train on the train split, validate each epoch, keep the best weights by train.monitor.

    `workdir` holds the resume state (BackupAndRestore), the best weights and the epoch log; rerunning after a
    kill continues from the last finished epoch. `resumable=False` keeps no resume state (a tuning trial: a killed
    one is redone from its start).
    """
    if p.monitor not in MONITORS:
        raise ValueError(f"train.monitor must be one of {MONITORS}, got {p.monitor!r}")
    n_train = shards.count("train")
    if n_train < p.batch_size:
        raise ValueError(f"the train split has {n_train} records, fewer than train.batch_size={p.batch_size}")
    steps = p.steps_per_epoch or n_train // p.batch_size
    spec = InputSpec(p.model.gray, p.model.target, hints=p.model.hints)
    if not 0 <= p.hint_none_share <= 1:
        raise ValueError(f"train.hint_none_share must be in [0, 1], got {p.hint_none_share}")
    if not 1 <= p.hint_points <= hints.MAX_POINTS:
        raise ValueError(f"train.hint_points must be in [1, {hints.MAX_POINTS}], got {p.hint_points}")
    drawn = {"hint_none_share": p.hint_none_share, "hint_points": p.hint_points}
    keep = None
    if p.folder_balance != 1:
        shares, keep = folder_shares(shards, "train", p.folder_balance)
        log.info("train.folder_balance %s: each folder's training records, keep probability and share drawn\n%s",
                 p.folder_balance, shares.to_string())
    train = dataset(shards, "train", spec, p.batch_size, training=True, seed=p.seed, flip=p.flip, crop=p.crop,
                    scale=p.scale, keep=keep, **drawn)
    # validation draws hints as training does (the same ones every epoch): the monitor ranks what the model is for
    val = dataset(shards, "val", spec, p.batch_size, **drawn)
    size = p.crop or shards.image_size

    workdir.mkdir(parents=True, exist_ok=True)
    history_csv, best_weights = workdir / "history.csv", workdir / "best.weights.h5"
    previous = pd.read_csv(history_csv) if history_csv.exists() and history_csv.stat().st_size else None
    if previous is not None:
        log.info("resuming: %d epochs already done in %s", len(previous), workdir)
    throughput = Throughput(p.batch_size)
    with distribution_scope():
        prior = class_prior(shards, p.model.target) if colour.is_bins(p.model.target) else None
        model = compile_model(p, size, steps * p.epochs, prior)
    all_callbacks = [
        *([keras.callbacks.BackupAndRestore(str(workdir / "backup"))] if resumable else []),
        NaNGuard(),
        throughput,
        # validation, the checkpoint and the epoch's sample grid see the averaged weights; the backup above keeps both
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if p.ema else []),
        keras.callbacks.ModelCheckpoint(
            str(best_weights), monitor=p.monitor, mode="min", save_best_only=True, save_weights_only=True,
            initial_value_threshold=float(previous[p.monitor].min()) if previous is not None else None,
        ),
        keras.callbacks.EarlyStopping(monitor=p.monitor, mode="min", patience=p.patience),
        *callbacks,  # tracking before the epoch log: an epoch in history.csv is also in MLflow, even after a kill
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        *([TimeBudget(p.time_budget_s)] if p.time_budget_s else []),
        *([EncoderSchedule(p.encoder_frozen_epochs, p.encoder_lr)] if fine_tunes_an_encoder(p) else []),
    ]
    start = time.perf_counter()
    model.fit(train.repeat(), epochs=p.epochs, steps_per_epoch=steps, validation_data=val,
              validation_steps=math.ceil(shards.count("val") / p.batch_size), shuffle=False,  # tf.data shuffles
              callbacks=all_callbacks, verbose=verbose)
    wall = time.perf_counter() - start
    if best_weights.exists():
        model.load_weights(str(best_weights))
    history = pd.read_csv(history_csv)
    rate = float(np.nanmean(throughput.rates)) if np.isfinite(throughput.rates).any() else float("nan")
    return FitResult(model, history, int(history[p.monitor].idxmin()), p.monitor, wall, rate)
