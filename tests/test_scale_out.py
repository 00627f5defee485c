"""Scale-out paths on the real engines: Optuna and an MLflow server on PostgreSQL, a DVC remote, several devices."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from src import tune
from tests.conftest import ROOT, photo
from tests.repo import dvc, env, variant
from tests.repo import run as run_cmd
from tests.services import invoke, mlflow_server, model_server
from tests.test_gate import set_params
from tests.test_tune import light_repo, logs, trials_so_far, worker  # noqa: F401  (a fixture)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
TOLERANCE = 0.05  # relative, after one epoch: each replica normalises its 8 images with its own BatchNorm statistics


def load(pg_url: str) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=tune.storage_for(pg_url))


def child_runs(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("colorizer")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


@pytest.mark.slow
def test_two_workers_on_postgres_finish_the_trials_once_each_and_a_new_process_resumes(tiny_shards, tmp_path, pg_url,
                                                                                        light_repo):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # schema created once, as by `dvc repro`
    workers = [worker(tiny_shards, tmp_path, 4, pg_url, repo=light_repo) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=900) == 0, logs(tmp_path)
    study = load(pg_url)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 4 and [t.number for t in study.trials] == list(range(len(study.trials)))
    assert len({t.user_attrs["pid"] for t in finished}) == 2  # both workers did trials
    runs = {r.info.run_id: r for r in child_runs(uri, study.user_attrs["mlflow_parent_run_id"])}
    assert sorted(t.user_attrs["mlflow_run_id"] for t in study.trials) == sorted(runs)  # one run per trial
    for t in study.trials:
        logged = runs[t.user_attrs["mlflow_run_id"]].data.params
        assert logged["trial"] == str(t.number)
        assert float(logged["learning_rate"]) == pytest.approx(t.params["learning_rate"])

    # a new process resumes the study: one more trial, the same parent run
    assert worker(tiny_shards, tmp_path, 5, pg_url, repo=light_repo).wait(timeout=900) == 0, logs(tmp_path)
    resumed = load(pg_url)
    assert [t.number for t in resumed.trials] == [0, 1, 2, 3, 4] and all(t.state in FINISHED for t in resumed.trials)
    assert resumed.user_attrs["mlflow_parent_run_id"] == study.user_attrs["mlflow_parent_run_id"]


@pytest.mark.slow
def test_a_killed_worker_s_trial_is_failed_by_the_heartbeat_and_retried_by_the_other(tiny_shards, tmp_path, pg_url,
                                                                                     light_repo):
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # schema created once
    beat = ("--heartbeat-interval", "1", "--grace-period", "3")
    first = worker(tiny_shards, tmp_path, 3, pg_url, *beat, repo=light_repo)
    second = worker(tiny_shards, tmp_path, 3, pg_url, *beat, repo=light_repo)
    storage, deadline = tune.storage_for(pg_url), time.monotonic() + 600
    victim = None
    while victim is None and time.monotonic() < deadline and first.poll() is None:
        trials = trials_so_far(storage)
        running = {t.user_attrs.get("pid"): t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING}
        # both inside a trial: the second is past its start, where it re-queues a dead local worker's trial itself
        if running.keys() == {first.pid, second.pid} and sum(t.state in FINISHED for t in trials) <= 1:
            victim = running[first.pid]
        time.sleep(0.2)
    assert victim is not None, logs(tmp_path)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert second.wait(timeout=900) == 0, logs(tmp_path)
    study = load(pg_url)
    seen = [(t.number, t.state.name, t.user_attrs.get("pid"), t.system_attrs.get("failed_trial"),
             t.user_attrs.get("retry_of")) for t in study.trials]
    assert study.trials[victim].state == optuna.trial.TrialState.FAIL, (victim, first.pid, seen)
    retries = [t for t in study.trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim]
    assert len(retries) == 1 and retries[0].state in FINISHED, (victim, seen)
    assert retries[0].params == study.trials[victim].params
    assert sum(t.state in FINISHED for t in study.trials) == 3, (victim, seen)


def fit_summary(shards_root: Path, devices: int, workdir: Path) -> dict:
    """One epoch on `devices` devices (a process's devices are fixed when TensorFlow starts); what the strategy saw."""
    from src.data.shards import ShardSet
    from src.training import fit
    from tests.stages.test_train import FAST

    p = replace(FAST, epochs=1, devices=devices, batch_size=16)
    fit.configure(p)
    r = fit.fit(p, ShardSet.open(shards_root), workdir, verbose=0)
    strategy = r.model.distribute_strategy
    return {"replicas": strategy.num_replicas_in_sync, "loss": float(r.history["loss"].iloc[-1]),
            "val_rmse": r.best_val_rmse,
            "devices": list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1 else []}


def fit_on_two_devices(shards_root: Path, workdir: Path) -> dict:
    """fit_summary on two logical CPU devices, in a fresh process."""
    code = ("import json\nfrom pathlib import Path\nimport src\nfrom tests.test_scale_out import fit_summary\n"
            f"print(json.dumps(fit_summary(Path({str(shards_root)!r}), 2, Path({str(workdir)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_logical_devices_split_the_batch_and_match_one_device(tiny_shards, tmp_path):
    one = fit_summary(tiny_shards.root, 1, tmp_path / "one")  # this process's one CPU device
    two = fit_on_two_devices(tiny_shards.root, tmp_path / "two")
    assert one["replicas"] == 1 and two["replicas"] == 2, (one, two)
    assert len(two["devices"]) == 2  # each replica takes 8 of the global batch of 16
    assert two["loss"] == pytest.approx(one["loss"], rel=TOLERANCE)
    assert two["val_rmse"] == pytest.approx(one["val_rmse"], rel=TOLERANCE)


@pytest.mark.slow
def test_the_pipeline_and_serving_through_an_mlflow_server_on_postgres(reproduced, tmp_path, pg_databases):
    """The team setup of docs/scaling.md: MLflow server on PostgreSQL (proxied artifacts). The clone already ran
    `dvc repro` once (with a local store): training again, forced, gives the same model's figures."""
    repo = variant(reproduced, tmp_path)
    first = json.loads((repo / "reports" / "eval.json").read_text())
    # the 5-photo model loses to both baselines and would be kept out of `champion` (tests/stages/test_evaluate.py);
    # this test is about the machinery, so it lets the model through, and does not score the released model beside it
    set_params(repo, "evaluate.champion_margin_db=-5", "evaluate.compare_release=false")
    with mlflow_server(pg_databases(), tmp_path / "artifacts") as uri:
        dvc("repro", "-f", "train", "evaluate", cwd=repo, env_extra={"MLFLOW_TRACKING_URI": uri})
        again = json.loads((repo / "reports" / "eval.json").read_text())
        assert again["test"]["model"] == first["test"]["model"]  # same params and data: same numbers
        assert "release" not in again["test"] and again["eval_rmse"] == first["eval_rmse"]
        client = MlflowClient(uri)
        meta = json.loads((repo / "models" / "model.json").read_text())
        run = client.get_run(meta["mlflow_run_id"])
        assert run.data.params["learning_rate"] == str(params_of(repo)["train"]["learning_rate"])
        epochs = json.loads((repo / "reports" / "train.json").read_text())["epochs"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_rmse")] == list(range(epochs))
        assert client.list_artifacts(run.info.run_id, "images")  # sample grids
        assert run.data.metrics["eval_rmse"] == pytest.approx(
            json.loads((repo / "reports" / "eval.json").read_text())["eval_rmse"], abs=1e-3)
        champion = client.get_model_version_by_alias("colorizer", "champion")
        assert champion.run_id == run.info.run_id

        photos = tmp_path / "photos"
        photos.mkdir()
        gray = cv2.cvtColor(photo((64, 96), seed=3), cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(photos / "old.png"), gray)
        run_cmd([sys.executable, "-m", "src.colorize", str(photos), "--out", str(tmp_path / "out"), "--model",
                 "models:/colorizer@champion"], repo, env=env() | {"MLFLOW_TRACKING_URI": uri})
        coloured = cv2.imread(str(tmp_path / "out" / "old.png"))
        assert coloured.shape == (64, 96, 3)
        with model_server("models:/colorizer@champion", uri) as base:
            (served,) = invoke(base, [gray])
        assert served.shape == (64, 96, 3)
        assert np.abs(served.astype(int) - coloured[..., ::-1]).max() <= 1  # the same model, the same pixels


@pytest.mark.slow
def test_a_study_on_postgres_logs_its_trials_to_an_mlflow_server_on_postgres(tiny_shards, tmp_path, pg_databases,
                                                                              light_repo):
    """The tuning half of docs/scaling.md's team setup: the study in one database, the runs on the server."""
    with mlflow_server(pg_databases(), tmp_path / "artifacts") as uri:
        study = pg_databases()
        run_cmd([sys.executable, "-m", "src.tune", "--storage", study, "--n-trials", "2", "--epochs", "1",
                 "--study-name", "team", "--shards", str(tiny_shards.root), "--out", str(tmp_path / "tune")],
                light_repo, env=env() | {"MLFLOW_TRACKING_URI": uri})
        loaded = optuna.load_study(study_name="team", storage=tune.storage_for(study))
        parent = loaded.user_attrs["mlflow_parent_run_id"]
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("colorizer").experiment_id
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
        assert len(children) == 2
        assert sorted(r.info.run_id for r in children) == sorted(t.user_attrs["mlflow_run_id"] for t in loaded.trials)


def params_of(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


@pytest.mark.slow
def test_a_dvc_remote_carries_outputs_and_experiments_to_a_fresh_clone(reproduced, tmp_path):
    origin, storage = tmp_path / "origin.git", tmp_path / "dvc-storage"  # stand-ins for a git host and S3
    run_cmd(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    first = variant(reproduced, tmp_path)
    dvc("remote", "add", "-d", "storage", str(storage), cwd=first)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run_cmd(git + ["add", "-A"], first)
    run_cmd(git + ["commit", "-qm", "pipeline outputs"], first)
    run_cmd(git + ["remote", "add", "origin", str(origin)], first)
    run_cmd(git + ["push", "-q", "origin", "HEAD:main"], first)
    dvc("push", cwd=first)

    second = tmp_path / "second"
    run_cmd(["git", "clone", "-q", "-b", "main", str(origin), str(second)], tmp_path)
    dvc("pull", cwd=second)
    assert "Data and pipelines are up to date" in dvc("repro", cwd=second).stdout  # nothing recomputed
    first_metrics, second_metrics = (json.loads(dvc("metrics", "show", "--json", cwd=repo).stdout)[""]["data"]
                                     for repo in (first, second))  # "": the workspace
    assert second_metrics == first_metrics and "reports/eval.json" in json.dumps(first_metrics)

    dvc("exp", "run", "-n", "fewer-samples", "-S", "evaluate.samples=3", "-S", "evaluate.compare_release=false",
        "-S", "evaluate.register_as=''", cwd=first)  # reruns evaluate only; registering is not what this is about
    dvc("exp", "push", "origin", "fewer-samples", cwd=first)
    dvc("exp", "pull", "origin", "fewer-samples", cwd=second)
    listed = dvc("exp", "show", "--json", cwd=second).stdout
    assert "fewer-samples" in listed
    dvc("exp", "apply", "fewer-samples", cwd=second)
    assert params_of(second)["evaluate"]["samples"] == 3
    assert (second / "reports" / "eval_samples.png").exists()
