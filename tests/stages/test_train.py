"""Training: a short real fit, determinism, NaN handling, MLflow contents (sqlite and a real server), resume."""
from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from src.core.params import ModelParams, TrainParams
from src.data import colour
from src.stages import train
from src.training import fit
from src.training.tracking import TrackingUnavailable, connect
from tests.repo import copy_repo, dvc, env
from tests.services import free_port, mlflow_server

FAST = TrainParams(model=ModelParams(encoder="light", encoder_widths=(8, 16, 32), decoder_widths=(16, 8)), epochs=3, batch_size=16,
                   patience=5, sample_every=1, sample_count=3)


def fit_once(shards, tmp: Path, p: TrainParams = FAST) -> fit.FitResult:
    fit.configure(p)
    return fit.fit(p, shards, tmp, verbose=0)


def test_a_short_fit_learns_and_keeps_the_best_weights(tiny_shards, tmp_path):
    result = fit_once(tiny_shards, tmp_path)
    history = result.history
    assert list(history["epoch"]) == [0, 1, 2]
    assert history["rmse"].iloc[-1] < history["rmse"].iloc[0]
    evaluated = result.model.evaluate(*_val_arrays(tiny_shards), verbose=0, return_dict=True)
    assert evaluated["rmse"] == pytest.approx(history["val_rmse"].min(), rel=1e-4)  # the returned model is the best epoch's


def test_weight_averaging_keeps_the_averaged_weights_it_validated(tiny_shards, tmp_path):
    plain = fit_once(tiny_shards, tmp_path / "plain")
    result = fit_once(tiny_shards, tmp_path / "ema", replace(FAST, ema=0.9))
    assert not result.history["val_rmse"].equals(plain.history["val_rmse"])
    evaluated = result.model.evaluate(*_val_arrays(tiny_shards), verbose=0, return_dict=True)
    assert evaluated["rmse"] == pytest.approx(result.best_val_rmse, rel=1e-4)


@pytest.mark.parametrize("target", ["bins", "cbcr_bins"])
def test_the_bins_target_trains_and_colourises(tiny_shards, tmp_path, target):
    from src.data.pipeline import InputSpec
    from src.model.predict import Colorizer
    from src.training.fit import class_prior

    # the head starts at the class prior of the target's own plane: its mean is the training photos' mean colour
    # and its spread the photos' (plus the soft labels' own 2 sigma^2): these gray-on-average photos have a mean
    # near zero in any plane, but their chroma lengths differ by plane
    train = tiny_shards.load("train")
    prior, centres = class_prior(tiny_shards, target, stride=1), colour.chroma_bins(target)
    truth = colour.record_target(train, target).reshape(-1, 2)
    np.testing.assert_allclose(prior @ centres, truth.mean(axis=0), atol=0.1 * colour.BIN_STEPS[target])
    label_spread = 2 * (colour.BIN_STEPS[target] / 2) ** 2
    assert prior @ (centres**2).sum(1) == pytest.approx((truth**2).sum(1).mean() + label_spread, rel=0.1)
    p = replace(FAST, model=replace(FAST.model, target=target), loss="ce", epochs=2)
    result = fit_once(tiny_shards, tmp_path, p)
    assert result.history["val_rmse"].notna().all()
    colorizer = Colorizer(result.model, InputSpec(target=target, temperature=0.38), tiny_shards.image_size)
    records = tiny_shards.load("val", limit=2)
    out = colorizer.colorize_records(records)
    assert out.shape == records.shape[:-1] + (3,) and out.dtype == np.uint8
    np.testing.assert_allclose(colour.luma(out), records[..., colour.Y], atol=3)  # the photo's own luma

    from src import calibrate

    table = calibrate.sweep(Colorizer(result.model, InputSpec(target=target), tiny_shards.image_size),
                            tiny_shards.root, temperatures=(1.0, 0.5), boosts=(0.0, 16.0), sizes=(32, 64))
    assert len(table) == 8 and table["PSNR - gray"].notna().all()
    at_32 = table.query("temperature == 1.0 and inference_size == 32")
    plain, boosted = at_32.sort_values("colour_boost")["colourful / truth"]
    assert boosted > plain
    at = {size: rows["colourful / truth"].to_numpy() for size, rows in table.groupby("inference_size")}
    assert not np.allclose(at[32], at[64])  # the model ran again at 64 px
    at_64 = Colorizer(result.model, InputSpec(target=target), 64)  # a model that colours at 64 px
    default = calibrate.sweep(at_64, tiny_shards.root, temperatures=(1.0,), boosts=(0.0,))
    assert list(default["inference_size"]) == calibrate.sizes_for(tiny_shards.image_size)  # from the training size


def test_monitor_val_loss_keeps_the_epoch_with_the_lowest_validation_loss(tiny_shards, tmp_path):
    # a saturation-weighted L1 loss and the plain RMSE disagree on the best epoch here (epoch 5 vs 3)
    p = replace(FAST, loss="l1", saturation_weight=4.0, learning_rate=0.003, epochs=5, monitor="val_loss")
    result = fit_once(tiny_shards, tmp_path, p)
    history = result.history
    assert history["val_loss"].idxmin() != history["val_rmse"].idxmin()  # else this test could not tell them apart
    assert result.best_epoch == history["val_loss"].idxmin()
    assert result.best_value == history["val_loss"].min()
    evaluated = result.model.evaluate(*_val_arrays(tiny_shards), verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(history["val_loss"].min(), rel=1e-4)  # the returned model is that epoch's


def _val_arrays(shards):
    from src.data.pipeline import InputSpec, arrays

    return arrays(shards.load("val"), InputSpec())


def test_same_params_and_data_give_the_same_numbers(tiny_shards, tmp_path):
    a = fit_once(tiny_shards, tmp_path / "a").history
    b = fit_once(tiny_shards, tmp_path / "b").history
    pd.testing.assert_series_equal(a["val_rmse"], b["val_rmse"])
    pd.testing.assert_series_equal(a["loss"], b["loss"])


def test_a_diverging_run_stops_with_a_clear_error(tiny_shards, tmp_path):
    p = replace(FAST, optimizer="sgd", learning_rate=1e12)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        fit_once(tiny_shards, tmp_path, p)


def run_stage(tiny_shards, tmp: Path, uri: str, inference_size: int = 64) -> dict:
    p = replace(FAST, model=replace(FAST.model, inference_size=inference_size), tracking_uri=uri,
                experiment="test-train")
    return train.run(p, shards_dir=tiny_shards.root, model_dir=tmp / "models", metrics=tmp / "train.json",
                     history=tmp / "history.csv", cache=tmp / "cache")


def check_run(uri: str, tmp: Path) -> None:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["learning_rate"] == str(FAST.learning_rate)
    assert run.data.params["model.decoder_widths"] == "(16, 8)"
    assert run.data.params["data.image_size"] == "32"  # the shards' resolution, for comparing runs
    assert len(run.data.tags["git_commit"]) >= 7
    assert run.inputs.dataset_inputs[0].dataset.name == "shards"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_rmse")] == [0, 1, 2]
    assert run.data.metrics["train_img_per_s"] > 0 and run.data.metrics["wall_s"] > 0
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert len(images) >= 3, images  # a stepped series: one grid per epoch here
    meta = json.loads((tmp / "models" / "model.json").read_text())
    assert meta["mlflow_run_id"] == run.info.run_id
    assert meta["image_size"] == 64 and run.data.params["model.inference_size"] == "64"  # colours at 64, trained at 32
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    gray = np.zeros((2, 32, 32, 1), np.uint8)
    assert np.asarray(model.predict(gray)).shape == (2, 32, 32, 2)
    assert json.loads((tmp / "train.json").read_text())["epochs"] == 3


def test_the_mlflow_run_holds_params_metrics_images_and_a_loadable_model(tiny_shards, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_stage(tiny_shards, tmp_path, uri)
    mlflow.set_tracking_uri(uri)
    check_run(uri, tmp_path)


@pytest.fixture
def tracking_server(tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as uri:
        yield uri


def test_the_same_run_through_a_real_tracking_server(tiny_shards, tmp_path, tracking_server):
    run_stage(tiny_shards, tmp_path, tracking_server)
    mlflow.set_tracking_uri(tracking_server)
    check_run(tracking_server, tmp_path)


def test_a_copied_tracking_store_says_where_its_runs_would_write(tmp_path, caplog):
    first, second = tmp_path / "my project", tmp_path / "my project 2"  # a space: the location is a file URI
    first.mkdir()
    connect(f"sqlite:///{first / 'mlflow.db'}", "colorizer")
    shutil.copytree(first, second)  # the experiment's artifact location stays first/mlruns
    with caplog.at_level(logging.WARNING, logger="src.training.tracking"):
        connect(f"sqlite:///{first / 'mlflow.db'}", "colorizer")
        assert caplog.text == ""
        connect(f"sqlite:///{second / 'mlflow.db'}", "colorizer")
    assert f"'colorizer' keeps its artifacts in {first / 'mlruns'}, outside {second}" in caplog.text


def test_an_unreachable_tracking_server_fails_before_training(tiny_shards, tmp_path):
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        run_stage(tiny_shards, tmp_path, f"http://127.0.0.1:{free_port()}")
    assert not (tmp_path / "cache").exists()


def test_an_inference_size_the_encoder_cannot_take_fails_before_training(tiny_shards, tmp_path):
    with pytest.raises(ValueError, match="divisible by 2"):  # the light encoder's two poolings need multiples of 4
        run_stage(tiny_shards, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", inference_size=50)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "mlflow.db").exists()


EPOCHS = 6  # the light encoder's short epochs: the kill lands after two of them with four still to go


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_epoch(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=EPOCHS, patience=EPOCHS, sample_every=EPOCHS)
    params["train"]["model"].update(encoder="light", encoder_widths=[8, 16, 32], decoder_widths=[16, 8])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "shard", cwd=repo)
    command = [sys.executable, "-m", "src.stages.train"]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, cwd=repo, env=env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    history = None
    while time.monotonic() < deadline and first.poll() is None:
        found = list((repo / ".cache" / "train").glob("*/history.csv"))
        if found and found[0].read_text().count("\n") >= 3:  # header + two finished epochs
            history = found[0]
            break
        time.sleep(0.2)
    assert history is not None, "training never finished two epochs:\n" + (tmp_path / "first.log").read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = len(pd.read_csv(history))
    assert done_before < EPOCHS and not (repo / "models").exists()

    second = subprocess.run(command, cwd=repo, env=env(), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming: {done_before} epochs already done" in second.stderr
    final = pd.read_csv(repo / "reports" / "train_history.csv")
    assert list(final["epoch"]) == list(range(EPOCHS))
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("colorizer").experiment_id])
    assert len(runs) == 1, "the resumed training must continue the same MLflow run"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_rmse")) == EPOCHS


def test_throughput_leaves_out_the_compiling_first_step(tiny_shards, tmp_path):
    two = fit_once(tiny_shards, tmp_path / "two", replace(FAST, epochs=1, steps_per_epoch=2))
    assert two.img_per_s > 0 and two.history["img_per_s"].notna().all()  # the second step alone was timed
    one = fit_once(tiny_shards, tmp_path / "one", replace(FAST, epochs=1, steps_per_epoch=1))
    assert np.isnan(one.img_per_s)  # nothing but compiling: no figure rather than a wrong one
    assert 2 * FAST.batch_size / two.wall_s < two.img_per_s  # the whole run's average would be far lower
