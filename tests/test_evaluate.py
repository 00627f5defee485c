"""Evaluate, colorize, registry and serving on a small trained model; the CI gate on the real pipeline."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from src import colorize, gate
from src.params import EvaluateParams
from src.stages import evaluate, train
from tests.conftest import photo, shared_folder
from tests.repo import copy_repo, dvc, env, run
from tests.test_train import FAST, free_port


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory):
    """A model trained by the train stage on the tiny shards, tracked in a sqlite MLflow store."""
    tmp = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    p = replace(FAST, tracking_uri=uri, experiment="test-eval", epochs=2)
    train.run(p, shards_dir=tiny_shards.root, model_dir=tmp / "models", metrics=tmp / "train.json",
              history=tmp / "history.csv", cache=tmp / "cache")
    return tmp, uri


def run_evaluate(trained, tiny_shards, tmp: Path, p: EvaluateParams) -> dict:
    model_tmp, _ = trained
    out = (tmp / "eval.json", tmp / "eval_images.csv", tmp / "eval_samples.png")
    result = evaluate.run(p, model_dir=model_tmp / "models", shards_dir=tiny_shards.root, out_metrics=out[0],
                          out_images=out[1], out_samples=out[2])
    return result, out


def test_evaluate_reports_the_model_beside_both_baselines(trained, tiny_shards, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(3):
        cv2.imwrite(str(extra / f"photo{i}.png"), photo((90, 140), seed=100 + i))
    (extra / "broken.jpg").write_bytes(b"not a photo")
    result, (metrics_json, table_csv, samples_png) = run_evaluate(
        trained, tiny_shards, tmp_path, EvaluateParams(extra_folder=str(extra), image_size=64, register_as=""))
    assert json.loads(metrics_json.read_text()) == result
    assert result["eval_rmse"] == result["test"]["model"]["rmse"] > 0
    for set_name, count in (("test", tiny_shards.count("test")), ("extra", 3)):
        block = result[set_name]
        assert block["images"] == count
        assert block["gray"]["colourfulness"] == 0
        assert block["truth_colourfulness"] > 0
        for method in ("model", "gray", "constant"):
            assert set(block[method]) == {"rmse", "psnr", "hs_rmse", "hue_error", "colourfulness"}
            assert 5 < block[method]["psnr"] < 60
    import pandas as pd

    table = pd.read_csv(table_csv)
    assert len(table) == 3 * (tiny_shards.count("test") + 3)
    assert "broken.jpg" not in set(table["image"])
    picture = cv2.imread(str(samples_png))
    assert picture.shape[1] == 4 * 32 * 2  # gray | constant | model | truth, at 2x


def test_evaluation_is_logged_to_the_training_run_and_the_champion_moves_only_when_better(trained, tiny_shards, tmp_path):
    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer-test")
    result, out = run_evaluate(trained, tiny_shards, tmp_path, p)
    first = evaluate.track(p, result, model_dir=model_tmp / "models", shards_dir=tiny_shards.root, reports=out)
    assert first["promoted"] and first["champion_version"] is None
    again = evaluate.track(p, result, model_dir=model_tmp / "models", shards_dir=tiny_shards.root, reports=out)
    assert not again["promoted"] and again["champion_rmse"] == pytest.approx(again["eval_rmse"])  # a tie keeps it

    client = MlflowClient(uri)
    assert client.get_model_version_by_alias("colorizer-test", "champion").version == first["version"]
    run_id = json.loads((model_tmp / "models" / "model.json").read_text())["mlflow_run_id"]
    logged = client.get_run(run_id).data.metrics
    assert logged["eval_rmse"] == pytest.approx(result["eval_rmse"])
    assert "test_constant_psnr" in logged
    assert {a.path for a in client.list_artifacts(run_id, "evaluation")} >= {"evaluation/eval.json",
                                                                            "evaluation/eval_samples.png"}


def test_serving_answers_with_colour_images(trained, tiny_shards, tmp_path):
    model_tmp, uri = trained
    p = EvaluateParams(register_as="colorizer-serve")
    result, out = run_evaluate(trained, tiny_shards, tmp_path, p)
    evaluate.track(p, result, model_dir=model_tmp / "models", shards_dir=tiny_shards.root, reports=out)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/colorizer-serve@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env() | {"MLFLOW_TRACKING_URI": uri}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/ping", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "model server did not start"
                time.sleep(0.5)
        gray = cv2.cvtColor(photo((48, 80), seed=7), cv2.COLOR_BGR2GRAY)
        request = urllib.request.Request(base + "/invocations", data=json.dumps({"inputs": [gray.tolist()]}).encode(),
                                         headers={"Content-Type": "application/json"})
        reply = np.array(json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"])
        assert reply.shape == (1, 48, 80, 3)
        rgb = reply[0].astype(np.uint8)
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
        assert np.abs(luma - gray).mean() < 3  # the reply keeps the photo's own brightness
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_colorize_writes_full_resolution_colour_photos_and_skips_bad_files(trained, tmp_path):
    model_tmp, _ = trained
    inputs = tmp_path / "in"
    (inputs / "nested").mkdir(parents=True)
    cv2.imwrite(str(inputs / "old.jpg"), cv2.cvtColor(photo((123, 211), seed=1), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(inputs / "nested" / "colour.png"), photo((64, 96), seed=2))
    (inputs / "unreadable.jpg").write_bytes(b"\xff\xd8 broken")
    code = colorize.main([str(inputs), "--out", str(tmp_path / "out"), "--model", str(model_tmp / "models")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["colour.png", "old.png"]
    out = cv2.imread(str(tmp_path / "out" / "old.png"))
    assert out.shape == (123, 211, 3)
    assert np.abs(out.astype(int) - out[..., :1]).max() > 0  # colour was added
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


def test_gate_compares_against_the_baseline_with_a_tolerance(tmp_path):
    assert gate.check({"eval_rmse": 10.4}, {"eval_rmse": 10.0}, 0.5)[0]
    passed, message = gate.check({"eval_rmse": 10.6}, {"eval_rmse": 10.0}, 0.5)
    assert not passed and "10.6000" in message and "10.0000" in message


@pytest.mark.slow
def test_the_default_pipeline_passes_the_gate_and_a_broken_model_trips_it(tmp_path):
    """The README's pipeline exactly as a user runs it (`dvc repro`), then the gate; then a deliberately broken model."""
    repo = copy_repo(tmp_path / "repo")
    reproduced = dvc("repro", cwd=repo)
    closing = [line for line in (reproduced.stdout + reproduced.stderr).splitlines() if "verdict:" in line]
    eval_json = json.loads((repo / "reports" / "eval.json").read_text())["test"]
    gain = eval_json["model"]["psnr"] - eval_json["gray"]["psnr"]
    assert len(closing) == 1 and f"{gain:+.2f} dB vs gray" in closing[0]
    if "NOT better" in closing[0]:  # the few sample photos teach too little: the line says so and what to run
        photos = json.loads((repo / "data" / "shards" / "manifest.json").read_text())["splits"]["train"]["photos"]
        assert f"{photos} training photos" in closing[0] and "experiments/recipe.yaml" in closing[0]
    shown = dvc("metrics", "show", cwd=repo).stdout
    assert "eval_rmse" in shown and "test.gray.psnr" in shown and "test.constant.psnr" in shown
    passed = run([sys.executable, "-m", "src.gate"], repo, check=False)
    print(passed.stdout)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS" in passed.stdout

    # A broken target encoding: the model's chroma read as the original H,S encoding.
    meta_path = repo / "models" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"target": "hs" if meta["target"] == "chroma" else "chroma"}))
    run([sys.executable, "-c", "from src.stages import evaluate; from src import params; "
         "evaluate.run(params.load('evaluate'))"], repo)
    failed = run([sys.executable, "-m", "src.gate"], repo, check=False)
    print(failed.stdout)
    assert failed.returncode == 1 and "FAIL" in failed.stdout


def test_results_table_lists_evaluated_runs_beside_the_baselines(trained, tiny_shards, tmp_path):
    from src import results

    model_tmp, uri = trained
    p = EvaluateParams(register_as="")
    result, out = run_evaluate(trained, tiny_shards, tmp_path, p)
    evaluate.track(p, result, model_dir=model_tmp / "models", shards_dir=tiny_shards.root, reports=out)
    mlflow.set_tracking_uri(uri)
    meta = json.loads((model_tmp / "models" / "model.json").read_text())
    mlflow.MlflowClient(uri).set_tag(meta["mlflow_run_id"], "mlflow.note.content", "a described attempt")
    table = results.table("test-eval", "test")
    assert len(table) >= 1
    (row,) = [r for _, r in table.iterrows() if r["note"] == "a described attempt"]
    assert row["px"] == "32"
    assert row["PSNR"] == pytest.approx(result["test"]["model"]["psnr"])
    assert row["PSNR - gray"] == pytest.approx(result["test"]["model"]["psnr"] - result["test"]["gray"]["psnr"])
    assert 0 <= row["colourful / truth"]
