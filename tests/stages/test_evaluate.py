"""Evaluate, colorize, registry and serving on a small trained model; the CI gate on the real pipeline."""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src import colorize
from src.core.params import EvaluateParams, TrainParams
from src.data import colour
from src.model.predict import load
from src.stages import evaluate, train
from tests.conftest import build_shards, code_carrying_model, photo, shared_folder
from tests.services import invoke, model_server
from tests.stages.test_train import FAST


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Photos whose colour follows their brightness (viridis, whose lightness rises monotonically), in 32 px tiles:
    a short training learns real colours from them and beats both baselines, as a good model must."""
    tmp = tmp_path_factory.mktemp("viridis")
    raw = tmp / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        field = cv2.GaussianBlur(rng.random((80, 120)).astype(np.float32), (0, 0), 8)
        gray = cv2.normalize(field, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        cv2.imwrite(str(raw / f"v{i:02d}.png"), cv2.applyColorMap(gray, cv2.COLORMAP_VIRIDIS))
    return build_shards(raw, tmp, tile=40, image_size=32)


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    """A model trained by the train stage on those shards, tracked in a sqlite MLflow store."""
    tmp = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    p = replace(FAST, tracking_uri=uri, experiment="test-eval", epochs=6, learning_rate=0.01)
    train.run(p, shards_dir=shards.root, model_dir=tmp / "models", metrics=tmp / "train.json",
              history=tmp / "history.csv", cache=tmp / "cache")
    return tmp, uri


def where(trained) -> TrainParams:
    """The store the trained model was tracked in, as params.yaml's train section names it."""
    return replace(FAST, tracking_uri=trained[1], experiment="test-eval")


def with_head(trained, dest: Path, change) -> Path:
    """A copy of the trained model folder whose 1x1 head conv weights are `change(kernel, bias)`."""
    import keras

    shutil.copytree(trained[0] / "models", dest)
    model = keras.saving.load_model(dest / "model.keras", compile=False, safe_mode=True)
    model.get_layer("head").set_weights(list(change(*model.get_layer("head").get_weights())))
    model.save(dest / "model.keras")
    return dest


def mean_chroma(rgb: np.ndarray) -> float:
    return float((rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)).mean())


def run_evaluate(trained, shards, tmp: Path, p: EvaluateParams, model_dir: Path | None = None) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    out = (tmp / "eval.json", tmp / "eval_images.csv", tmp / "eval_samples.png")
    result = evaluate.run(p, model_dir=model_dir or trained[0] / "models", shards_dir=shards.root,
                          out_metrics=out[0], out_images=out[1], out_samples=out[2])
    return result, out


def test_evaluate_reports_the_model_beside_both_baselines(trained, shards, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(3):
        cv2.imwrite(str(extra / f"photo{i}.png"), photo((90, 140), seed=100 + i))
    (extra / "broken.jpg").write_bytes(b"not a photo")
    result, (metrics_json, table_csv, samples_png) = run_evaluate(
        trained, shards, tmp_path, EvaluateParams(extra_folder=str(extra), image_size=64, register_as=""))
    assert json.loads(metrics_json.read_text()) == result
    records = shards.load("test")  # the headline RMSE, recomputed here from the model's own output
    predicted = load(trained[0] / "models").colorize_records(records).astype(np.float64)
    truth = colour.record_to_bgr(records)
    per_image = np.sqrt(((predicted - truth) ** 2).mean(axis=(1, 2, 3)))
    assert result["eval_rmse"] == pytest.approx(per_image.mean(), abs=1e-3)
    for set_name, count in (("test", shards.count("test")), ("extra", 3)):
        block = result[set_name]
        assert block["images"] == count
        assert block["gray"]["colourfulness"] == 0
        assert block["truth_colourfulness"] > 0
        for method in ("model", "release", "gray", "constant"):  # the released model scored on the same images
            assert set(block[method]) == {"rmse", "psnr", "hs_rmse", "hue_error", "colourfulness"}
        assert block["release"]["psnr"] != block["model"]["psnr"]
    gray_psnr = []  # the gray baseline of the extra photos, recomputed with OpenCV alone
    for i in range(3):
        bgr = cv2.resize(cv2.imread(str(extra / f"photo{i}.png")), (64, 64), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR).astype(np.float64)
        gray_psnr.append(20 * np.log10(255 / np.sqrt(((gray - bgr) ** 2).mean())))
    assert result["extra"]["gray"]["psnr"] == pytest.approx(np.mean(gray_psnr), abs=0.1)
    import pandas as pd

    table = pd.read_csv(table_csv)
    methods = set(table["method"])  # the release's automatic colours alone: its hint path is not the yardstick
    assert "release_hints10" not in methods
    assert {"model", "release", "gray", "constant"} <= methods and len(table) == len(methods) * (shards.count("test") + 3)
    assert "broken.jpg" not in set(table["image"])
    picture = cv2.imread(str(samples_png))
    assert picture.shape[1] == 4 * 32 * 2  # gray | constant | model | truth, at 2x


def test_the_test_split_is_also_reported_per_training_folder(trained, shards, tmp_path):
    """eval.json's test_by_source: each download folder's test photos apart, the model beside the release and the
    baselines (issue 37's table of where variety paid)."""
    raw = tmp_path / "raw"
    for folder, seeds in (("cars", range(12)), ("scenes", range(12, 30))):
        (raw / folder).mkdir(parents=True)
        for i in seeds:
            shutil.copy(shards.root.parent / "raw" / f"v{i:02d}.png", raw / folder / f"v{i:02d}.png")
    two = build_shards(raw, tmp_path, tile=40, image_size=32)
    result, (_, table_csv, _) = run_evaluate(trained, two, tmp_path / "eval", EvaluateParams(register_as=""))
    import pandas as pd

    table = pd.read_csv(table_csv).query("set == 'test' and method == 'model'")
    by_source = result["test_by_source"]
    assert set(by_source) == {"cars", "scenes"}
    for folder, block in by_source.items():
        mine = table[table["image"].str.startswith(folder + "/")]
        assert block["images"] == len(mine) > 0
        assert block["model"]["psnr"] == pytest.approx(mine["psnr"].mean(), abs=1e-3)
        assert {"model", "release", "gray", "constant"} <= set(block)
    assert sum(b["images"] for b in by_source.values()) == result["test"]["images"]


def test_evaluation_is_logged_to_the_training_run_and_the_champion_moves_only_when_better(trained, shards, tmp_path):
    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer-test", compare_release=False)
    worse = with_head(trained, tmp_path / "worse", lambda k, b: (k * 8, b - 1.0))  # over-saturated, wrong hue
    results = {}
    for name, folder in (("worse", worse), ("better", model_tmp / "models"), ("worse again", worse)):
        result, out = run_evaluate(trained, shards, tmp_path / name.replace(" ", "-"), p, model_dir=folder)
        results[name] = (result, evaluate.track(p, result, where(trained), model_dir=folder,
                                                shards_dir=shards.root, reports=out))
    assert results["worse"][0]["eval_rmse"] > results["better"][0]["eval_rmse"] + 5  # two really different models
    better_test = results["better"][0]["test"]
    assert better_test["model"]["psnr"] > max(better_test["gray"]["psnr"], better_test["constant"]["psnr"]) + 0.1
    first, second, third = (results[k][1] for k in ("worse", "better", "worse again"))
    assert not first["promoted"] and "does not beat gray" in first["reason"]  # no champion yet, and still refused
    assert second["promoted"] and second["champion_version"] is None
    assert not third["promoted"] and third["champion_version"] == second["version"]
    tags = MlflowClient(uri).get_model_version("colorizer-test", first["version"]).tags
    assert tags["not_promoted"] == first["reason"]

    client = MlflowClient(uri)
    assert client.get_model_version_by_alias("colorizer-test", "champion").version == second["version"]
    run_id = json.loads((model_tmp / "models" / "model.json").read_text())["mlflow_run_id"]
    logged = client.get_run(run_id).data.metrics
    assert logged["eval_rmse"] == pytest.approx(results["worse again"][0]["eval_rmse"])  # the last one logged
    assert "test_constant_psnr" in logged
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {"evaluation/eval.json",
                                                                            "evaluation/eval_samples.png"}


def test_the_registered_model_is_code_not_a_pickle(trained, shards, tmp_path):
    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer-code", compare_release=False)
    result, out = run_evaluate(trained, shards, tmp_path, p)
    evaluate.track(p, result, where(trained), model_dir=model_tmp / "models", shards_dir=shards.root, reports=out)
    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts("models:/colorizer-code@champion", dst_path=str(tmp_path / "dl")))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["model_code_path"].endswith("serving_entry.py") and "python_model" not in flavor
    assert not list(local.rglob("*.pkl"))
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # loading must not need a pickle at all
    try:
        served = mlflow.pyfunc.load_model("models:/colorizer-code@champion")
        out = served.predict(shards.load("test", limit=2)[..., colour.Y])
        with pytest.raises(MlflowException, match="at most 50000000 per request"):  # the default limit
            served.predict(np.zeros((1, 8000, 6251), np.uint8))
    finally:
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    assert out.shape == (2, shards.image_size, shards.image_size, 3)


def test_the_registered_model_carries_the_onnx_flavour_and_its_pyfunc_runs_it(trained, shards, tmp_path):
    """The ONNX flavour is the network itself (any ONNX tool loads it); the pyfunc, which `mlflow models serve`
    serves, runs it on onnxruntime within a level of the Keras model it was exported from."""
    import onnx

    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer-onnx", compare_release=False)
    result, out = run_evaluate(trained, shards, tmp_path, p)
    evaluate.track(p, result, where(trained), model_dir=model_tmp / "models", shards_dir=shards.root, reports=out)
    mlflow.set_tracking_uri(uri)
    graph = mlflow.onnx.load_model("models:/colorizer-onnx@champion")
    assert isinstance(graph, onnx.ModelProto) and [i.name for i in graph.graph.input] == ["gray"]
    gray = shards.load("test", limit=3)[..., colour.Y]
    on_onnx, on_keras = (mlflow.pyfunc.load_model("models:/colorizer-onnx@champion", model_config=config)
                         for config in (None, {"runtime": "keras"}))
    assert (on_onnx.unwrap_python_model().runtime, on_keras.unwrap_python_model().runtime) == ("onnx", "keras")
    keras_rgb = np.stack([c[..., ::-1] for c in load(model_tmp / "models").colorize(list(gray))])
    assert np.abs(on_keras.predict(gray).astype(int) - keras_rgb).max() == 0
    assert np.abs(on_onnx.predict(gray).astype(int) - keras_rgb).max() <= 1


def test_a_tampered_models_folder_cannot_redirect_the_tracking(trained, shards, tmp_path):
    tampered = tmp_path / "models"
    shutil.copytree(trained[0] / "models", tampered)
    meta = json.loads((tampered / "model.json").read_text())
    evil = tmp_path / "elsewhere.db"
    (tampered / "model.json").write_text(json.dumps(meta | {"mlflow_tracking_uri": f"sqlite:///{evil}"}))
    p = EvaluateParams(register_as="", compare_release=False)
    result, out = run_evaluate(trained, shards, tmp_path / "eval", p, model_dir=tampered)
    evaluate.track(p, result, where(trained), model_dir=tampered, shards_dir=shards.root, reports=out)
    assert not evil.exists()
    logged = MlflowClient(trained[1]).get_run(meta["mlflow_run_id"]).data.metrics
    assert logged["eval_rmse"] == pytest.approx(result["eval_rmse"])


def test_the_loader_refuses_a_model_that_carries_code(tmp_path):
    from src.model.predict import load

    with pytest.raises(ValueError, match="(?i)lambda|safe"):
        load(code_carrying_model(tmp_path / "models"))


def test_serving_answers_with_colour_images(trained, shards, tmp_path):
    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer-serve", compare_release=False)
    result, out = run_evaluate(trained, shards, tmp_path, p)
    evaluate.track(p, result, where(trained), model_dir=model_tmp / "models", shards_dir=shards.root, reports=out)
    gray = cv2.cvtColor(photo((48, 80), seed=7), cv2.COLOR_BGR2GRAY)
    limit = {"max_request_pixels": 100 * 100}  # the limit as a deployer lowers it: a small request crosses it
    with model_server("models:/colorizer-serve@champion", uri, MLFLOW_PYFUNC_INFERENCE_CONFIG=json.dumps(limit)) as base:
        reply = invoke(base, [gray])
        assert reply.shape == (1, 48, 80, 3)
        rgb = reply[0]
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
        assert np.abs(luma - gray).mean() < 3  # the reply keeps the photo's own brightness
        gray_model = with_head(trained, tmp_path / "gray", lambda k, b: (k * 0, b * 0))  # chroma 0 everywhere
        gray_reply = load(gray_model).colorize([gray])[0]
        assert mean_chroma(gray_reply) < 1 and mean_chroma(rgb) > 5  # colour, not a gray picture
        with pytest.raises(urllib.error.HTTPError) as refused:
            invoke(base, [np.zeros((100, 101), np.uint8)])
        assert refused.value.code == 400 and "at most 10000 per request" in refused.value.read().decode()


def test_colorize_writes_full_resolution_colour_photos_and_skips_bad_files(trained, tmp_path):
    model_tmp, _ = trained
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    cv2.imwrite(str(inputs / "old.jpg"), cv2.cvtColor(photo((123, 211), seed=1), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(inputs / "nested" / "colour.png"), photo((64, 96), seed=2))
    (inputs / "unreadable.jpg").write_bytes(b"\xff\xd8 broken")
    with open(inputs / "zeros.jpg", "wb") as f:
        f.truncate(2 * 2**30)  # 2 GB of zeros: skipped from its size, unread
    code = colorize.main([str(inputs), "--out", str(tmp_path / "out"), "--model", str(model_tmp / "models")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["colour.png", "old.png"]
    out = cv2.imread(str(tmp_path / "out" / "old.png"))
    assert out.shape == (123, 211, 3)
    assert mean_chroma(out) > 5 and (out.max(-1).astype(int) - out.min(-1) > 2).mean() > 0.5  # coloured, mostly
    assert colorize.main([str(inputs / "unreadable.jpg"), "--out", str(tmp_path / "o2"),
                          "--model", str(model_tmp / "models")]) == 1


def test_colorize_on_real_gray_photos(trained, tmp_path):
    folder = shared_folder("cbsd68")
    inputs = tmp_path / "gray"
    inputs.mkdir()
    for path in sorted(folder.iterdir())[:3]:
        cv2.imwrite(str(inputs / path.name), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert colorize.main([str(inputs), "--out", str(tmp_path / "out"), "--model", str(trained[0] / "models")]) == 0
    for path in sorted(inputs.iterdir()):
        assert cv2.imread(str(tmp_path / "out" / path.name)).shape[:2] == cv2.imread(str(path)).shape[:2]


def test_results_table_lists_evaluated_runs_beside_the_baselines(trained, shards, tmp_path):
    from src import results

    model_tmp, uri = trained
    p = EvaluateParams(register_as="", compare_release=False)
    result, out = run_evaluate(trained, shards, tmp_path, p)
    evaluate.track(p, result, where(trained), model_dir=model_tmp / "models", shards_dir=shards.root, reports=out)
    mlflow.set_tracking_uri(uri)
    meta = json.loads((model_tmp / "models" / "model.json").read_text())
    mlflow.MlflowClient(uri).set_tag(meta["mlflow_run_id"], "mlflow.note.content", "a described attempt")
    table = results.table("test-eval", "test")
    assert len(table) >= 1
    (row,) = [r for _, r in table.iterrows() if r["note"] == "a described attempt"]
    assert row["px"] == "32" and row["infer px"] == "0"  # coloured at its training size
    assert row["photos"] == str(shards.manifest["splits"]["train"]["photos"]) and row["img/s"] > 0
    train_report = json.loads((model_tmp / "train.json").read_text())
    assert row["val RMSE"] == pytest.approx(train_report["best_val_rmse"], abs=1e-5)  # what settings are chosen on
    assert row["PSNR"] == pytest.approx(result["test"]["model"]["psnr"])
    assert row["PSNR - gray"] == pytest.approx(result["test"]["model"]["psnr"] - result["test"]["gray"]["psnr"])
    assert row["colourful / truth"] == pytest.approx(
        result["test"]["model"]["colourfulness"] / result["test"]["truth_colourfulness"], rel=1e-3)


@pytest.mark.slow
def test_a_hint_model_is_tracked_scored_with_hints_registered_and_gated_like_the_others(shards, tmp_path):
    from src import gate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    p = replace(FAST, model=replace(FAST.model, target="bins", hints=True), loss="ce", tracking_uri=uri,
                experiment="test-hints", epochs=4, learning_rate=0.01, hint_none_share=0.0)  # every photo: learns faster
    train.run(p, shards_dir=shards.root, model_dir=tmp_path / "models", metrics=tmp_path / "train.json",
              history=tmp_path / "history.csv", cache=tmp_path / "cache")
    ep = EvaluateParams(register_as="colorizer-hints", compare_release=False, gate_margin_db=0.0)
    result, out = run_evaluate((tmp_path, uri), shards, tmp_path / "eval", ep, model_dir=tmp_path / "models")
    test = result["test"]
    hinted = f"model_hints{evaluate.HINT_POINTS}"
    assert test[hinted]["psnr"] > test["model"]["psnr"]  # 10 true colours help even a model trained for seconds
    assert result["eval_rmse"] == test["model"]["rmse"]  # the headline and the gate stay the automatic figures
    outcome = evaluate.track(ep, result, p, model_dir=tmp_path / "models", shards_dir=shards.root, reports=out)
    assert str(outcome["version"]) == "1"
    run_id = json.loads((tmp_path / "models" / "model.json").read_text())["mlflow_run_id"]
    logged = MlflowClient(uri).get_run(run_id).data
    assert logged.params["model.hints"] == "True" and f"test_{hinted}_psnr" in logged.metrics
    checks = gate.check(result, result, ep)
    assert all(passed for passed, _ in checks) and len(checks) == 4
    worse = json.loads(json.dumps(result))
    worse["test"]["model"]["rmse"] += 1.0
    assert not gate.check(worse, result, ep)[0][0]  # a regression of the hint model fails the gate
