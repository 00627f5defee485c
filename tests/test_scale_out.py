"""Scale-out paths on the real engines: Optuna studies on PostgreSQL shared by worker processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from src import tune
from tests.conftest import ROOT
from tests.repo import env
from tests.test_tune import logs, worker

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
TOLERANCE = 0.05  # relative, after one epoch: each replica normalises its 8 images with its own BatchNorm statistics


def load(pg_url: str) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=tune.storage_for(pg_url))


def child_runs(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("colorizer")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


@pytest.mark.slow
def test_two_workers_on_postgres_finish_the_trials_once_each(tiny_shards, tmp_path, pg_url):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # schema created once, as by `dvc repro`
    workers = [worker(tiny_shards, tmp_path, 4, pg_url), worker(tiny_shards, tmp_path, 4, pg_url)]
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


@pytest.mark.slow
def test_a_killed_worker_s_trial_is_failed_by_the_heartbeat_and_retried_by_the_other(tiny_shards, tmp_path, pg_url):
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # schema created once
    beat = ("--heartbeat-interval", "1", "--grace-period", "3")
    first = worker(tiny_shards, tmp_path, 5, pg_url, *beat)
    second = worker(tiny_shards, tmp_path, 5, pg_url, *beat)
    deadline = time.monotonic() + 600
    victim = None
    while victim is None and time.monotonic() < deadline:
        try:
            trials = load(pg_url).trials
        except KeyError:
            trials = []
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("pid") == first.pid]
        if running and sum(t.state in FINISHED for t in trials) <= 1:
            victim = running[0].number
        time.sleep(0.2)
    assert victim is not None, logs(tmp_path)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert second.wait(timeout=900) == 0, logs(tmp_path)
    study = load(pg_url)
    assert study.trials[victim].state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == study.trials[victim].params
    assert sum(t.state in FINISHED for t in study.trials) == 5


@pytest.mark.slow
def test_a_study_on_postgres_resumes_from_a_new_process(tiny_shards, tmp_path, pg_url):
    assert worker(tiny_shards, tmp_path, 2, pg_url).wait(timeout=900) == 0, logs(tmp_path)
    parent = load(pg_url).user_attrs["mlflow_parent_run_id"]
    assert worker(tiny_shards, tmp_path, 3, pg_url).wait(timeout=900) == 0, logs(tmp_path)
    study = load(pg_url)
    assert [t.number for t in study.trials] == [0, 1, 2] and all(t.state in FINISHED for t in study.trials)
    assert study.user_attrs["mlflow_parent_run_id"] == parent


def fit_on_devices(shards_root: Path, devices: int) -> dict:
    """One epoch in a fresh process (devices are fixed when TensorFlow starts); what the strategy saw."""
    code = f"""
import json, tempfile
from dataclasses import replace
from pathlib import Path
import src
from src import fit
from src.shards import ShardSet
from tests.test_train import FAST
p = replace(FAST, epochs=1, devices={devices}, batch_size=16)
fit.configure(p)
r = fit.fit(p, ShardSet.open({str(shards_root)!r}), Path(tempfile.mkdtemp()), verbose=0)
strategy = r.model.distribute_strategy
print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "loss": float(r.history["loss"].iloc[-1]),
                  "val_rmse": r.best_val_rmse,
                  "devices": list(strategy.extended.worker_devices) if strategy.num_replicas_in_sync > 1 else []}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_logical_devices_split_the_batch_and_match_one_device(tiny_shards):
    one, two = fit_on_devices(tiny_shards.root, 1), fit_on_devices(tiny_shards.root, 2)
    assert one["replicas"] == 1 and two["replicas"] == 2, (one, two)
    assert len(two["devices"]) == 2  # each replica takes 8 of the global batch of 16
    assert two["loss"] == pytest.approx(one["loss"], rel=TOLERANCE)
    assert two["val_rmse"] == pytest.approx(one["val_rmse"], rel=TOLERANCE)
