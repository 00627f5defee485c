"""The release as ONNX on onnxruntime: the recorded files, colours within a level of Keras', no TensorFlow loaded."""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np

from src.core.files import sha256_file
from src.model import onnx_runtime, release
from tests.conftest import ROOT, photo
from tests.repo import env, run


def test_the_export_gives_the_files_the_release_records(onnx_cache):
    """This session's cache starts empty: the files were built by `python -m src.export` in a fresh process during
    this session, and the recorded lines come from another process on another day. The same bytes."""
    paths = onnx_runtime.files()
    assert set(paths) == {"automatic", "hints"} and all(p.parent == onnx_cache for p in paths.values())
    recorded = onnx_runtime.recorded(release.WEIGHTS)
    for path in paths.values():
        assert sha256_file(path) == recorded[path.name], path.name


def test_an_export_is_repeated_until_it_gives_the_recorded_file_or_one_file_twice():
    """tf2onnx now and then writes an equivalent hint graph with one Reshape fewer (one export in five here): the
    build exports again until it meets the release's record, and records only a file that came out twice."""
    from src.model.onnx_export import ATTEMPTS, settled

    def exports(*digests):
        given = iter(digests)
        return lambda: next(given)

    assert settled(exports("variant", "release"), "release", "hints.onnx") == "release"
    assert settled(exports("variant", "common", "common"), None, "hints.onnx") == "common"  # nothing recorded yet
    assert settled(exports(*[f"v{i}" for i in range(ATTEMPTS + 1)]), "release", "x") == f"v{ATTEMPTS - 1}"  # gives up


def test_the_canonical_file_does_not_depend_on_how_many_functions_the_process_traced_before():
    """tf2onnx names the traced function in the graph's doc string by a process-wide counter, which differed
    between an Intel and an AMD machine building the same release: the canonical file drops it."""
    import onnx
    from onnx import helper

    from src.model.onnx_export import canonical

    def exported(counter: int) -> bytes:
        node = helper.make_node("Relu", ["gray"], ["out"])
        value = helper.make_tensor_value_info
        graph = helper.make_graph([node], "tf2onnx", [value("gray", onnx.TensorProto.FLOAT, ["unk__1", 4])],
                                  [value("out", onnx.TensorProto.FLOAT, ["unk__1", 4])],
                                  doc_string=f"converted from b'__inference___call___{counter}'")
        return canonical(helper.make_model(graph)).SerializeToString(deterministic=True)

    assert exported(12914) == exported(19684)


def test_onnx_colours_within_a_level_of_keras_with_and_without_hints():
    from src.data import hints

    portable, keras_path = onnx_runtime.load(), release.load()
    photos = [cv2.cvtColor(photo((150, 200), seed=s), cv2.COLOR_BGR2GRAY) for s in (1, 2)]
    red = hints.parse([{"x": 60, "y": 40, "colour": "#c03020"}], 200, 150, portable.spec.target)
    coloured = {}
    for name, given in (("automatic", None), ("hints", [red, []])):  # a hint on the first photo only
        coloured[name] = [c.colorize(photos, given=given) for c in (portable, keras_path)]
        for a, b in zip(*coloured[name]):
            assert np.abs(a.astype(int) - b).max() <= 1, name
    assert np.abs(coloured["hints"][0][0].astype(int) - coloured["automatic"][0][0]).max() > 10  # the hint counts


def test_colorize_on_onnx_says_so_and_never_loads_tensorflow_nor_mlflow_without_a_store(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "old.png"), cv2.cvtColor(photo((90, 120), seed=5), cv2.COLOR_BGR2GRAY))
    code = ("import sys, json; from src import colorize; "
            f"code = colorize.main([{str(inputs)!r}, '--out', {str(tmp_path / 'out')!r}]); "
            "print(json.dumps([code, 'tensorflow' in sys.modules, 'keras' in sys.modules, 'mlflow' in sys.modules]))")
    done = run([sys.executable, "-c", code], ROOT,
               env=env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, False, False, False]  # no store: no registry
    first = next(line for line in done.stderr.splitlines() if "model:" in line)
    assert "on onnxruntime" in first and release.NAME in first
    assert cv2.imread(str(tmp_path / "out" / "old.png")).shape == (90, 120, 3)


def test_the_export_folds_batch_norm_in_numpy_not_with_tensorflow_s_rsqrt():
    """TensorFlow's rsqrt, which the exporter folds into the file, is an approximation whose last bits differ between
    Intel and AMD processors (v5's files built on an Intel Xeon were not the ones recorded on an AMD EPYC, and every
    colorize there refused them): the exported network computes each BatchNormalization as a scale and shift that
    numpy computed, correctly rounded on any processor, nested models included."""
    import keras
    import tensorflow as tf

    from src.model.onnx_export import with_affine_batch_norm

    def block(inputs, name):
        bn = keras.layers.BatchNormalization(name=f"{name}_bn")
        x = bn(keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name=f"{name}_conv")(inputs))
        rng = np.random.default_rng(len(name))
        bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4), rng.normal(0, 1, 4), rng.uniform(0.1, 3, 4)])
        return x

    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, block(inner_in, "inner"), name="encoder")
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, block(inner(block(inputs, "outer")), "top"))

    def traced_ops(network) -> set[str]:
        concrete = tf.function(lambda x: network(x, training=False)).get_concrete_function(
            tf.TensorSpec((1, 8, 8, 1), tf.float32))
        return {op.type for op in concrete.graph.get_operations()}

    affine = with_affine_batch_norm(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    assert np.abs(affine(x, training=False).numpy() - model(x, training=False).numpy()).max() < 1e-3
    assert "Rsqrt" in traced_ops(model) and "Rsqrt" not in traced_ops(affine)
    assert not [layer for layer in affine.get_layer("encoder").layers if isinstance(layer, keras.layers.BatchNormalization)]
