"""The released colorizer as ONNX files, for onnxruntime: colouring without TensorFlow (docs/serving.md).

A hint release gives two files: its automatic path (the base it is built on: gray in) and its hint path (gray and
hint maps in); a release without hints gives the first alone. Keras' exporter (tf2onnx) writes each at the
release's inference size with a free batch dimension. The same release and the locked packages give the same bytes:
their SHA-256 lines sit beside the release's own (release/<name>.onnx.sha256), and src/model/onnx_runtime.py checks
every file against them before it runs it. Names, shapes and ranges: docs/serving.md.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import heapq
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

from src.core.files import atomic_path, sha256_file
from src.model import release
from src.model.onnx_runtime import GRAY, HINTS, SCORES, checksums, file_names, recorded

log = logging.getLogger(__name__)
OPSET = 17
ATTEMPTS = 4


def export(model, image_size: int, with_hints: bool, dest: Path) -> str:
    """Write one Keras colorizer as ONNX (atomically); its SHA-256."""
    import warnings

    import onnx
    import tensorflow as tf

    half = sorted({layer.compute_dtype for layer in _layers(model)} & {"float16", "bfloat16"})
    if half:  # found by trying: minutes of XLA and tf2onnx work for a file onnxruntime then refuses to load
        raise ValueError(f"a mixed-precision model ({', '.join(half)} layers): tf2onnx's casts do not load in "
                         "onnxruntime")
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its INFO lines narrate every graph pass
    signature = {GRAY: tf.TensorSpec((None, image_size, image_size, 1), tf.uint8, name=GRAY)}
    if with_hints:
        signature[HINTS] = tf.TensorSpec((None, image_size, image_size, 3), tf.float32, name=HINTS)
    model = with_affine_batch_norm(model)
    with atomic_path(dest) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' numpy-2 patch of tf2onnx probes np.object
            model.export(str(tmp), format="onnx", verbose=False, opset_version=OPSET,
                         input_signature=[signature] if with_hints else [signature[GRAY]])
        graph = canonical(onnx.load(str(tmp)))
        tmp.write_bytes(graph.SerializeToString(deterministic=True))
        return sha256_file(tmp)


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _layers(layer)


def with_affine_batch_norm(model):
    """The same network, each BatchNormalization a per-channel scale and shift computed here in float64.

    Keras' BatchNormalization computes rsqrt(variance + epsilon), which TensorFlow's exporter folds into the file
    with TensorFlow's rsqrt: an approximation whose last bits differ between Intel and AMD processors, so the same
    release gave other bytes (and a refused cache) on the other vendor's machines. numpy's sqrt and division are
    correctly rounded everywhere. The other layers are shared with `model`, not copied."""
    import keras
    import numpy as np

    class Affine(keras.layers.Layer):
        def __init__(self, scale, shift, **kwargs):
            super().__init__(**kwargs)
            self.scale, self.shift = scale, shift

        def call(self, inputs, **_):  # BatchNormalization's training and mask arguments
            return inputs * self.scale + self.shift

    def affine(layer):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return layer
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            raise ValueError(f"{layer.name}: only channels-last BatchNormalization is exported (axis {layer.axis})")
        channels = layer.moving_mean.shape
        gamma = np.float64(layer.gamma.numpy()) if layer.scale else np.ones(channels)
        beta = np.float64(layer.beta.numpy()) if layer.center else np.zeros(channels)
        scale = gamma / np.sqrt(np.float64(layer.moving_variance.numpy()) + layer.epsilon)
        shift = beta - np.float64(layer.moving_mean.numpy()) * scale
        return Affine(scale.astype(np.float32), shift.astype(np.float32), name=layer.name)

    return keras.models.clone_model(model, clone_function=affine, recursive=True)


def canonical(model):
    """The same graph with an order and names that do not depend on the order tf2onnx happened to visit it in:
    nodes sorted by what they compute, tensors and nodes named by their place in that order, initializers in order
    of first use, the free batch dimension `n`, the output SCORES, and no doc string (tf2onnx's names the traced
    function by a counter of how many the process traced before). Two exports of one release have the same bytes."""
    graph = model.graph
    graph.doc_string = ""
    nodes = _by_content(graph)
    del graph.node[:]
    graph.node.extend(nodes)
    (output,) = graph.output
    kept = {v.name for v in graph.input}
    initializers = {t.name for t in graph.initializer}
    names, weights = {output.name: SCORES}, itertools.count()
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in initializers and name not in names:
                names[name] = f"w{next(weights)}"
        for j, name in enumerate(node.output):
            if name and name not in kept:
                names.setdefault(name, f"t{i}_{j}")
        node.name = f"n{i}"
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
    for tensor in [*graph.initializer, *graph.value_info, output]:
        tensor.name = names.get(tensor.name, tensor.name)
    ordered = sorted(graph.initializer, key=lambda t: int(t.name[1:]))
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = "n"
    return model


def _by_content(graph) -> list:
    """Copies of the nodes in a topological order that depends only on what they compute: of the nodes whose inputs
    are ready, the one whose computation (op, attributes, and recursively its inputs) hashes lowest goes first."""
    def digest(*parts) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()

    signature = {v.name: digest("input", v.name) for v in graph.input}
    for tensor in graph.initializer:
        value = type(tensor)()
        value.CopyFrom(tensor)
        value.name = ""
        signature[tensor.name] = digest("constant", value.SerializeToString(deterministic=True))
    keys, consumers = {}, collections.defaultdict(list)
    produced = {name for node in graph.node for name in node.output if name}
    for k, node in enumerate(graph.node):  # tf2onnx's order is topological: each input's signature is known here
        attributes = [a.SerializeToString(deterministic=True) for a in sorted(node.attribute, key=lambda a: a.name)]
        keys[k] = digest(node.op_type, node.domain, attributes, [signature.get(name, "") for name in node.input])
        for j, name in enumerate(node.output):
            signature[name] = digest(keys[k], j)
        for name in set(node.input) & produced:
            consumers[name].append(k)
    waiting = {k: len(set(node.input) & produced) for k, node in enumerate(graph.node)}
    ready = [(keys[k], k) for k, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        _, k = heapq.heappop(ready)
        node = type(graph.node[k])()
        node.CopyFrom(graph.node[k])
        ordered.append(node)
        for name in node.output:
            for consumer in consumers.get(name, []):
                waiting[consumer] -= 1
                if waiting[consumer] == 0:
                    heapq.heappush(ready, (keys[consumer], consumer))
    return ordered


def export_folder(model_dir: Path, dest: Path) -> str:
    """Write a model folder's network (models/, as the pipeline trained it) as one ONNX file; its SHA-256."""
    from src.model.predict import load

    colorizer = load(model_dir)
    return export(colorizer.model, colorizer.image_size, colorizer.spec.hints, dest)


def build(weights: Path, out: Path) -> dict[str, Path]:
    """Export a release's ONNX files into `out`: {"automatic": path[, "hints": path]}."""
    colorizer = release.load(weights)
    names = file_names(weights)
    if "hints" in names and colorizer.plain is None:
        raise release.ReleaseError(f"{weights.name}: its hint path does not colour photos without hints as a base "
                                   "does (hint_decoder shared), so no automatic ONNX file can be cut from it")
    out.mkdir(parents=True, exist_ok=True)
    expected = recorded(weights)
    networks = {"automatic": (colorizer.plain if colorizer.plain is not None else colorizer.model, False),
                "hints": (colorizer.model, True)}
    written = {}
    for kind, name in names.items():
        model, with_hints = networks[kind]
        written[kind] = out / name
        once = functools.partial(export, model, colorizer.image_size, with_hints, written[kind])
        settled(once, expected.get(name), name)
    return written


def settled(export_once: Callable[[], str], expected: str | None, name: str) -> str:
    """Run an export until it gives `expected` (the release's record), or, with none recorded yet, a file it gives
    twice; at most ATTEMPTS times. tf2onnx's optimiser now and then removes a Reshape of the hint path another way
    (one export in five here: an equivalent graph, other bytes), so the common graph is the one recorded and met."""
    seen = set()
    for attempt in range(1, ATTEMPTS + 1):
        digest = export_once()
        if digest == expected or (expected is None and digest in seen):
            break
        seen.add(digest)
        if attempt < ATTEMPTS and expected is not None:
            log.info("%s: tf2onnx wrote an equivalent graph with other bytes (%s); exporting again", name, digest[:12])
    return digest


def record(weights: Path, files: dict[str, Path]) -> Path:
    """Write release/<name>.onnx.sha256 (sha256sum format) for the built files; its path."""
    lines = "".join(f"{sha256_file(path)}  {path.name}\n" for path in sorted(files.values()))
    with atomic_path(checksums(weights)) as tmp:
        tmp.write_text(lines)
    return checksums(weights)
