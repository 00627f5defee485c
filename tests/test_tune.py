"""The Optuna tuner on real journal storage, real MLflow stores, real subprocess workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from src import tune
from src.core.params import ModelParams, TrainParams, TuneParams
from src.core.paths import PARAMS_FILE, ROOT, SEARCH_SPACE
from tests.repo import copy_repo, env

SPACE = {"learning_rate": {"low": 0.001, "high": 0.01, "log": True},
         "decoder_widths": {"choices": [[16, 8, 8], [32, 16, 8]]}}
TRAIN = TrainParams(model=ModelParams(encoder="light", encoder_widths=(8, 16, 32, 32), decoder_widths=(64, 32, 16)), batch_size=16)
TUNE = TuneParams(epochs=2, seed=1)


def sweep(tiny_shards, tmp: Path, n_trials: int, storage: Path | None = None, space=SPACE,
          train: TrainParams = TRAIN) -> optuna.Study:
    p = replace(train, tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="tune")
    return tune.run_study(n_trials, None, str(storage or tmp / "journal.log"), "study", TUNE, p, tiny_shards.root,
                          out=tmp / "out", space=space)


def children(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tune")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


def test_a_sweep_logs_parent_and_children_and_writes_its_reports(tiny_shards, tmp_path):
    study = sweep(tiny_shards, tmp_path, 3)
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 3
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = children(uri, study.user_attrs["mlflow_parent_run_id"])
    assert len(runs) == 3
    assert {r.data.tags["state"] for r in runs} <= {"complete", "pruned"}
    best = [r for r in runs if r.data.tags.get("best_trial") == "true"]
    assert len(best) == 1 and best[0].data.metrics["best_val_rmse"] == pytest.approx(study.best_value)
    assert all(len(MlflowClient(uri).get_metric_history(r.info.run_id, "val_rmse")) >= 1 for r in runs)
    best_params = yaml.safe_load((tmp_path / "out" / "best_params.yaml").read_text())
    assert best_params["params"]["decoder_widths"] in SPACE["decoder_widths"]["choices"]
    assert len((tmp_path / "out" / "trials.csv").read_text().splitlines()) == 4
    assert (tmp_path / "out" / "optimization_history.png").stat().st_size > 1000
    rss = [t.user_attrs["rss_mib"] for t in study.trials if "rss_mib" in t.user_attrs]
    assert max(rss) - min(rss) < 300, rss  # Keras sessions are cleared between trials


def test_a_sweep_can_tune_hint_models(tiny_shards, tmp_path):
    space = {"learning_rate": SPACE["learning_rate"], "hints": {"choices": [True]}}  # [false, true] compares kinds
    train = replace(TRAIN, model=replace(TRAIN.model, target="bins"), loss="ce")
    study = sweep(tiny_shards, tmp_path, 2, space=space, train=train)
    tried = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(tried) == 2 and all(t.params["hints"] for t in tried)
    runs = children(f"sqlite:///{tmp_path / 'mlflow.db'}", study.user_attrs["mlflow_parent_run_id"])
    assert {r.data.params["model.hints"] for r in runs} == {"True"}  # hint models trained, each an MLflow run


def test_rerunning_continues_the_same_study_and_parent_run(tiny_shards, tmp_path):
    first = sweep(tiny_shards, tmp_path, 2)
    second = sweep(tiny_shards, tmp_path, 3)
    assert len(second.trials) == 3 and [t.number for t in second.trials] == [0, 1, 2]
    assert second.user_attrs["mlflow_parent_run_id"] == first.user_attrs["mlflow_parent_run_id"]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tiny_shards, tmp_path, caplog):
    storage = tmp_path / "journal.log"
    study = optuna.create_study(study_name="study", storage=tune.storage_for(str(storage)))
    study.enqueue_trial({"learning_rate": 1e9, "decoder_widths": "16,8,8"})  # plain SGD at 1e9 diverges: NaN loss
    with caplog.at_level("INFO", logger="src.tune"):
        study = sweep(tiny_shards, tmp_path, 2, storage, SPACE, replace(TRAIN, optimizer="sgd", learning_rate=0.05))
    # a study made outside src.tune, with trials queued: no creator is about to open the parent run, so none waited
    assert "waiting up to" not in caplog.text and "has no MLflow parent run" not in caplog.text
    states = [t.state for t in study.trials]
    assert states[0] == optuna.trial.TrialState.FAIL
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == 2
    runs = children(f"sqlite:///{tmp_path / 'mlflow.db'}", study.user_attrs["mlflow_parent_run_id"])
    assert sorted(r.data.tags["state"] for r in runs).count("failed") == 1


def test_a_trial_that_runs_out_of_memory_is_recorded_as_failed_and_the_sweep_goes_on(tiny_shards, tmp_path):
    huge = [2**26, 8, 8]  # a 3x3 conv of 2**26 filters wants a 150 GB kernel: TensorFlow's ResourceExhaustedError
    space = {"learning_rate": SPACE["learning_rate"], "decoder_widths": {"choices": [huge, [16, 8, 8]]}}
    storage = tmp_path / "journal.log"
    study = optuna.create_study(study_name="study", storage=tune.storage_for(str(storage)))
    for widths in ("67108864,8,8", "16,8,8", "16,8,8"):
        study.enqueue_trial({"learning_rate": 0.005, "decoder_widths": widths})
    study = sweep(tiny_shards, tmp_path, 2, storage, space)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2, states
    assert "ResourceExhaustedError" in study.trials[0].user_attrs["fail_reason"]


def at_the_gate(tmp: Path) -> str:
    """Code that makes a worker say it is ready (a file named by its pid), then wait until `go` exists: workers
    released together race at the same line."""
    (tmp / "ready").mkdir(exist_ok=True)
    return (f"(pathlib.Path({str(tmp / 'ready')!r}) / str(os.getpid())).touch()\n"
            f"go = pathlib.Path({str(tmp / 'go')!r})\nwhile not go.exists(): time.sleep(0.001)\n")


def release_together(tmp: Path, workers: list[subprocess.Popen]) -> None:
    """Open the gate once every worker waits at it (none is still loading)."""
    ready, deadline = tmp / "ready", time.monotonic() + 120
    while len(list(ready.glob("*"))) < len(workers):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker never got ready"
        time.sleep(0.05)
    (tmp / "go").touch()


def test_workers_started_together_after_a_crash_requeue_each_orphan_once(tmp_path):
    storage = str(tmp_path / "journal.log")
    study = optuna.create_study(study_name="shared", storage=tune.storage_for(storage))
    dead = subprocess.Popen(["true"])
    dead.wait()
    for _ in range(2):  # two trials a crashed worker left RUNNING
        trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(0.001, 0.01)})
        trial.set_user_attr("pid", dead.pid)
        trial.set_user_attr("host", tune.HOST)
    code = ("import optuna, os, pathlib, time; from src import tune; "
            f"study = optuna.load_study(study_name='shared', storage=tune.storage_for({storage!r}))\n"
            + at_the_gate(tmp_path) + "print(tune.recover_orphans(study))")
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env())
               for _ in range(4)]
    release_together(tmp_path, workers)  # all four have loaded the study
    requeued = [int(w.communicate(timeout=120)[0].strip().splitlines()[-1]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sum(requeued) == 2
    trials = optuna.load_study(study_name="shared", storage=tune.storage_for(storage)).trials
    waiting = [t.user_attrs["retry_of"] for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert sorted(waiting) == [0, 1]


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_workers_started_together_agree_on_one_parent_run(tmp_path, request, backend):
    """Exactly one of them creates the study and opens the parent; the others wait for it (a slow creator too)."""
    storage = str(tmp_path / "journal.log") if backend == "journal" else request.getfixturevalue("pg_url")
    code = ("import optuna, os, pathlib, time; from src import tune\n" + at_the_gate(tmp_path) +
            f"study, created = tune.open_study('shared', tune.storage_for({storage!r}), None, None)\n"
            "if created:\n    time.sleep(1.0); study.set_user_attr('mlflow_parent_run_id', f'run-{os.getpid()}')\n"
            "print(created, study.user_attrs['mlflow_parent_run_id'] if created else tune.wait_for_parent(study))")
    if backend == "postgresql":  # the schema exists before the race, as after any first worker
        tune.storage_for(storage)
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env())
               for _ in range(4)]
    release_together(tmp_path, workers)
    said = [w.communicate(timeout=120)[0].split() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    creators = [pid for created, pid in said if created == "True"]
    assert len(creators) == 1 and {parent for _, parent in said} == {creators[0]}


def test_apply_writes_the_best_params_into_params_yaml_keeping_comments(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "best_params.yaml").write_text(yaml.safe_dump(
        {"trial": 3, "best_val_rmse": 0.2, "params": {"learning_rate": 0.0042, "decoder_widths": [96, 48, 24]}}))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(PARAMS_FILE.read_text())
    tune.apply_best(out, params_file)
    text = params_file.read_text()
    applied = yaml.safe_load(text)["train"]
    assert applied["learning_rate"] == 0.0042 and applied["model"]["decoder_widths"] == [96, 48, 24]
    assert "# one per skip, deep to shallow" in text


def test_a_new_trial_is_left_to_its_worker_while_it_names_itself(tmp_path):
    study = optuna.create_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log")))
    trial = study.ask()  # as Optuna creates it: RUNNING, before the objective writes pid and host

    def name_it() -> None:
        for key, value in tune.owner().items():
            trial.set_user_attr(key, value)

    threading.Timer(1.0, name_it).start()
    assert tune.recover_orphans(study, start_grace=30) == 0
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING and study.trials[0].user_attrs["pid"] == os.getpid()


@pytest.mark.parametrize("reused_by", ["thread", "process"])
def test_a_dead_worker_s_trial_is_redone_when_its_pid_now_names_a_thread_or_another_process(tmp_path, reused_by):
    """On a busy machine a dead worker's pid comes back within seconds, often as one of TensorFlow's threads."""
    study = optuna.create_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log")))
    started = tune.owner()["started"] - 60  # the dead worker's start
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    other = subprocess.Popen(["sleep", "60"])
    try:
        trial = study.ask({"learning_rate": optuna.distributions.FloatDistribution(0.001, 0.01)})
        for key, value in {"host": tune.HOST, "started": started,
                           "pid": thread.native_id if reused_by == "thread" else other.pid}.items():
            trial.set_user_attr(key, value)
        assert tune.recover_orphans(study) == 1
    finally:
        stop.set()
        other.kill()
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[1].user_attrs["retry_of"] == 0


def test_workers_tagging_one_run_at_the_same_moment_both_succeed(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("tune")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(5)]  # five races: one may go the easy way
    start, errors = threading.Barrier(8), []

    def tag(i: int) -> None:
        for run_id in run_ids:
            start.wait()  # all eight write the run's first tags at once, as workers finishing together do
            try:
                tune.set_shared_tags(run_id, {"best_trial": "true", "best_lr": str(i)})
            except Exception as exc:  # noqa: BLE001 - the test reports any
                errors.append(exc)

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(client.get_run(run_id).data.tags["best_trial"] == "true" for run_id in run_ids)


@pytest.fixture(scope="session")
def light_repo(tmp_path_factory) -> Path:
    """A copy of the repository whose params and search space are TRAIN's and SPACE's: worker processes there tune
    the light encoder, whose trials take a second instead of Lite0's ten (what is tested is the bookkeeping)."""
    repo = copy_repo(tmp_path_factory.mktemp("light") / "repo")
    params = yaml.safe_load((repo / PARAMS_FILE.name).read_text())
    params["train"]["model"].update(encoder="light", encoder_widths=list(TRAIN.model.encoder_widths),
                                    decoder_widths=list(TRAIN.model.decoder_widths))
    (repo / PARAMS_FILE.name).write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / SEARCH_SPACE.relative_to(ROOT)).write_text(yaml.safe_dump(SPACE))
    return repo


def worker(tiny_shards, tmp: Path, n_trials: int, storage: str = "", *extra: str,
           tracking_uri: str = "", repo: Path = ROOT) -> subprocess.Popen:
    """`python -m src.tune` in its own process group, as a user starts one per machine, in `repo` (its params)."""
    log = open(tmp / f"worker-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "src.tune", "--n-trials", str(n_trials), "--storage", storage or str(tmp / "journal.log"),
         "--study-name", "shared", "--shards", str(tiny_shards.root), "--epochs", "1",
         "--out", str(tmp / "reports"), *extra],
        env=env() | {"MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{tmp / 'mlflow.db'}"}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True, cwd=repo,
    )


def logs(tmp: Path) -> list[str]:
    return [p.read_text()[-2000:] for p in tmp.glob("worker-*.log")]


def trials_so_far(storage: optuna.storages.BaseStorage) -> list[optuna.trial.FrozenTrial]:
    """The shared study's trials while workers run; none before one of them has created the study."""
    try:
        return optuna.load_study(study_name="shared", storage=storage).trials
    except KeyError:
        return []


@pytest.mark.slow
def test_two_workers_share_one_study_without_lost_or_duplicated_trials(tiny_shards, tmp_path, light_repo):
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # schema created once, as by `dvc repro`
    workers = [worker(tiny_shards, tmp_path, 4, repo=light_repo), worker(tiny_shards, tmp_path, 4, repo=light_repo)]
    for w in workers:
        assert w.wait(timeout=900) == 0, logs(tmp_path)
    study = optuna.load_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log")))
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 4
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    run_ids = [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert len(set(run_ids)) == len(run_ids)
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both workers did trials


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_its_trial_to_the_worker_still_running(tiny_shards, tmp_path, light_repo):
    """No rerun needed: the survivor finds the dead worker's trial when it finishes its own, and redoes it."""
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # schema created once, as by `dvc repro`
    victim, survivor = worker(tiny_shards, tmp_path, 3, repo=light_repo), worker(tiny_shards, tmp_path, 3, repo=light_repo)
    storage = tune.storage_for(str(tmp_path / "journal.log"))
    both_in_a_trial, deadline = False, time.monotonic() + 600
    while not both_in_a_trial and time.monotonic() < deadline and victim.poll() is None and survivor.poll() is None:
        running = {t.user_attrs.get("pid") for t in trials_so_far(storage)
                   if t.state == optuna.trial.TrialState.RUNNING}
        both_in_a_trial = running == {victim.pid, survivor.pid}
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert both_in_a_trial, logs(tmp_path)
    assert survivor.wait(timeout=900) == 0, logs(tmp_path)
    study = optuna.load_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log")))
    seen = [(t.number, t.state.name, t.user_attrs.get("pid"), t.user_attrs.get("retry_of")) for t in study.trials]
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["pid"] == victim.pid, seen
    finished = [t for t in study.trials if t.state in tune.StopAtTrials.FINISHED]
    assert len(finished) == 3, seen
    assert any(t.user_attrs.get("retry_of") == killed[0].number and t.user_attrs["pid"] == survivor.pid
               for t in finished), seen


def test_a_trial_whose_worker_died_before_naming_itself_is_redone(tiny_shards, tmp_path, light_repo):
    study = optuna.create_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log")))
    orphan = study.ask()  # a worker killed between Optuna creating the trial and writing its pid into it
    assert worker(tiny_shards, tmp_path, 1, repo=light_repo).wait(timeout=600) == 0, logs(tmp_path)
    trials = optuna.load_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log"))).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert trials[1].user_attrs["retry_of"] == orphan.number


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_resumes_and_redoes_the_interrupted_trial(tiny_shards, tmp_path, light_repo):
    first = worker(tiny_shards, tmp_path, 3, repo=light_repo)
    storage = tune.storage_for(str(tmp_path / "journal.log"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        trials = trials_so_far(storage)
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and any(
                t.state == optuna.trial.TrialState.RUNNING for t in trials):
            break
        time.sleep(0.3)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = [t.number for t in optuna.load_study(study_name="shared", storage=storage).trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    assert done, "no trial finished before the kill"

    second = worker(tiny_shards, tmp_path, 3, repo=light_repo)
    assert second.wait(timeout=900) == 0
    study = optuna.load_study(study_name="shared", storage=tune.storage_for(str(tmp_path / "journal.log")))
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 3, ([(t.number, t.state.name, t.user_attrs) for t in study.trials], logs(tmp_path))
    assert set(done) <= {t.number for t in finished}  # nothing finished before the kill was lost
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(killed) == 1 and any(t.user_attrs.get("retry_of") == killed[0].number for t in finished)


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_optuna_dashboard_shows_a_study_from_the_journal_file_or_postgresql(backend, tmp_path, request):
    """docs/tuning.md's one command: `optuna-dashboard <the storage the tuner used>`."""
    import requests

    from tests.services import free_port, start, stop, wait_for

    url = str(tmp_path / "journal.log") if backend == "journal" else request.getfixturevalue("pg_databases")()
    study = optuna.create_study(study_name="colorizer", storage=tune.storage_for(url))
    study.optimize(lambda t: t.suggest_float("learning_rate", 1e-4, 1e-2, log=True), n_trials=3)
    port = free_port()
    server = start([str(Path(sys.executable).parent / "optuna-dashboard"), url, "--host", "127.0.0.1",
                    "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/api/studies", server, "optuna-dashboard")
        (summary,) = requests.get(f"{base}/api/studies", timeout=30).json()["study_summaries"]
        assert summary["study_name"] == "colorizer"
        detail = requests.get(f"{base}/api/studies/{summary['study_id']}", timeout=30).json()
        assert len(detail["trials"]) == 3 and requests.get(f"{base}/dashboard", timeout=30).status_code == 200
    finally:
        stop(server)
