"""Optuna sweep of learning rate and decoder widths over the pipeline's shards, one MLflow child run per trial.

    python -m src.tune --n-trials 6                 # after `dvc repro`; resumable: rerun to continue
    python -m src.tune --apply                      # write the best params into params.yaml, then `dvc repro`
    python -m src.tune --storage postgresql://user:pw@db/optuna --study-name big   # many machines, one study

Search space: experiments/search_space.yaml. Defaults: params.yaml `tune`. Trials call the train stage's fit
function with only the swept params changed, and report per-epoch val RMSE to the pruner. Outputs in
experiments/tune/: best_params.yaml, trials.csv, optimisation history and parameter importance plots.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import psutil
import yaml

from src.core import params
from src.core.files import atomic_path, write_text
from src.core.params import TrainParams, TuneParams, as_flat_dict
from src.core.paths import PARAMS_FILE, SEARCH_SPACE, SHARD_DIR, TUNE_DIR

log = logging.getLogger(__name__)
PARENT_WAIT_S = 20  # the creator opens the parent run a moment after creating the study
POLL_S = 1.0  # how often a worker looks at the others' trials while it waits on them
START_GRACE_S = 10  # a live worker names itself in its new trial within milliseconds
HOST = socket.gethostname()


def load_space(path: Path = SEARCH_SPACE) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    """Sample every entry of the search space; list choices travel as strings ("64,32,16") for Optuna."""
    values = {}
    for name, spec in space.items():
        if "choices" in spec:
            labels = [",".join(map(str, c)) if isinstance(c, list) else c for c in spec["choices"]]
            label = trial.suggest_categorical(name, labels)
            values[name] = tuple(int(v) for v in label.split(",")) if isinstance(label, str) else label
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=spec.get("log", False))
    return values


def apply_values(base: TrainParams, values: dict[str, Any]) -> TrainParams:
    """TrainParams with the swept values: model fields go to train.model, the rest to train."""
    model_fields = {k: v for k, v in values.items() if hasattr(base.model, k)}
    other = {k: v for k, v in values.items() if k not in model_fields}
    return replace(base, model=replace(base.model, **model_fields), **other)


def storage_for(url: str, heartbeat_interval: int = 60, grace_period: int = 180) -> optuna.storages.BaseStorage:
    """Journal file (default, one machine, many processes) or an RDB URL (PostgreSQL/MySQL: many machines)."""
    if not url:
        TUNE_DIR.mkdir(parents=True, exist_ok=True)
        url = str(TUNE_DIR / "journal.log")
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    import sqlalchemy.exc

    def connect() -> optuna.storages.RDBStorage:
        # heartbeats let Optuna fail the trial of a worker that died; the callback re-queues it once. Both are
        # marked experimental since Optuna 2.8 and chosen knowingly: the warning would only alarm the user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))

    for attempt in range(5):
        try:
            return connect()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # workers started together race to create the schema in an empty database; the loser finds it made
            log.info("the study database's schema is being created by another worker; retrying")
            time.sleep(0.5 * (attempt + 1))
    return connect()


def recover_orphans(study: optuna.Study, start_grace: float = START_GRACE_S) -> int:
    """Journal storage has no heartbeat: fail RUNNING trials whose process on this host is gone, and re-queue them.

    A worker writes its pid into a trial a few milliseconds after creating it; a RUNNING trial still without one
    after `start_grace` seconds belongs to a worker killed in between. Workers started together race for the same
    orphan; the storage serialises the FAIL writes and refuses all but the first (UpdateFinishedTrialError), so
    only the worker that failed it re-queues it."""
    orphans = 0
    heartbeats = optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)  # noqa: SLF001
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not heartbeats:  # with heartbeats a nameless trial turns stale and Optuna retries it
            trial = _with_owner(study, trial, start_grace)
            if trial.state != optuna.trial.TrialState.RUNNING:
                continue
        pid, host = trial.user_attrs.get("pid"), trial.user_attrs.get("host")
        if (pid is None and not heartbeats) or (host == HOST and not _alive(pid, trial.user_attrs.get("started"))):
            try:
                study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker claimed it a moment ago
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            orphans += 1
    if orphans:
        log.info("re-queued %d trial(s) interrupted by a killed worker", orphans)
    return orphans


def _with_owner(study: optuna.Study, trial: optuna.trial.FrozenTrial, grace: float) -> optuna.trial.FrozenTrial:
    """The trial once its worker has written its pid, or once `grace` seconds from its start have passed."""
    while "pid" not in trial.user_attrs and trial.state == optuna.trial.TrialState.RUNNING:
        if (datetime.now() - trial.datetime_start).total_seconds() > grace:  # Optuna keeps naive local times
            break
        time.sleep(POLL_S / 5)
        trial = study._storage.get_trial(trial._trial_id)  # noqa: SLF001
    return trial


def owner() -> dict[str, Any]:
    """The user attrs that name the process running a trial. The pid alone does not: a dead worker's pid is soon
    reused, by a process or by a thread (kill(2) accepts thread ids, and TensorFlow starts dozens of threads), so
    its start time goes with it. The pid comes last: a trial with a pid is a named one."""
    me = psutil.Process()
    return {"host": HOST, "started": me.create_time(), "pid": me.pid}


def _alive(pid: int, started: float | None) -> bool:
    """Whether a process (not a thread) with this pid runs, and, when the trial recorded it, started then."""
    try:
        return psutil.pid_exists(pid) and (started is None or abs(psutil.Process(pid).create_time() - started) < 0.01)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


TRIAL_FAILURES: tuple[type[BaseException], ...] = (FloatingPointError, MemoryError, RuntimeError, ValueError)


def backend_failures() -> tuple[type[BaseException], ...]:
    """Out-of-memory and other op errors of the Keras backend (TensorFlow's OpError is no RuntimeError; JAX's
    and PyTorch's errors are)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return (tf.errors.OpError,)
    return ()


class StopAtTrials:
    """Study callback: stop this worker once the study's finished trials, counting those other workers are still
    running, reach `n`; so workers together finish exactly `n`, not one more each.

    With heartbeats (RDB storage), a worker that would stop only because of others' running trials waits for
    them instead: a trial of a dead worker turns stale after the grace period, is failed and re-queued, and this
    worker runs the retry. Without heartbeats (journal file, one machine) recover_orphans finds it: when a worker
    starts, and here, each time a worker finishes a trial."""

    FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def __init__(self, n: int):
        self.n = n

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        storage = study._storage  # noqa: SLF001 - Optuna exposes no public accessor
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()  # RDB storages only
        while True:
            if interval:
                optuna.storages.fail_stale_trials(study)
            else:
                recover_orphans(study)  # a worker killed since this one started: its trial is re-queued here
            states = Counter(t.state for t in study.get_trials(deepcopy=False))
            done = states[self.FINISHED[0]] + states[self.FINISHED[1]]
            running, waiting = states[optuna.trial.TrialState.RUNNING], states[optuna.trial.TrialState.WAITING]
            if done >= self.n:
                study.stop()
                return
            if done + running < self.n or waiting:
                return  # work is left for this worker
            if not interval:
                study.stop()  # the others' running trials, whose workers are alive, complete the study
                return
            # wait: do they finish, or turn stale and come back? (checked often: a finished trial ends the wait)
            time.sleep(min(interval, POLL_S))


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune.pruner must be median, hyperband or none, got {name!r}")


class Objective:
    """One trial: sample, fit with the shared fit function, log a child MLflow run; returns best val RMSE."""

    def __init__(self, base: TrainParams, epochs: int, shards_dir: Path, space: dict):
        self.base, self.shards_dir, self.space = replace(base, epochs=epochs), shards_dir, space

    def __call__(self, trial: optuna.Trial) -> float:
        import keras
        import mlflow
        from optuna_integration import KerasPruningCallback

        from src.data.shards import ShardSet
        from src.training import fit
        from src.training.epoch_logger import EpochLogger

        storage = trial.study._storage  # noqa: SLF001 - Optuna exposes no public accessor
        if optuna.storages._heartbeat.is_heartbeat_enabled(storage):  # noqa: SLF001
            # a first beat now: the heartbeat thread records its first only when it gets the GIL, and a trial
            # whose worker dies before any beat is never found stale, so no worker would ever retry it
            storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
        for key, value in owner().items():
            trial.set_user_attr(key, value)
        p = apply_values(self.base, suggest(trial, self.space))
        keras.backend.clear_session()  # memory stays flat across in-process trials
        fit.configure(p)
        state, value = "failed", None
        with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}") as child:
            trial.set_user_attr("mlflow_run_id", child.info.run_id)
            mlflow.log_params(as_flat_dict(p) | {"trial": trial.number})
            try:
                with tempfile.TemporaryDirectory(prefix="trial-") as workdir:
                    result = fit.fit(p, ShardSet.open(self.shards_dir), Path(workdir), verbose=0, resumable=False,
                                     callbacks=[KerasPruningCallback(trial, p.monitor), EpochLogger()])
                state, value = "complete", result.best_value
                mlflow.log_metric(f"best_{p.monitor}", value)
                trial.set_user_attr("rss_mib", round(psutil.Process().memory_info().rss / 2**20))  # flat = no leak
            except optuna.TrialPruned:
                state = "pruned"
                raise
            except Exception as exc:  # the reason stays with the trial (Optuna only logs it)
                reason = f"{type(exc).__name__}: {exc}"[:500]
                trial.set_user_attr("fail_reason", reason)
                mlflow.set_tag("fail_reason", reason)
                raise
            finally:
                mlflow.set_tag("state", state)
        return value


def open_study(name: str, storage, sampler, pruner) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; True when this worker created it.

    The storage creates a study name once, so of workers started together exactly one is the creator: it alone
    opens the MLflow parent run, and the others join it (wait_for_parent) instead of each opening their own."""
    try:
        return optuna.create_study(study_name=name, direction="minimize", storage=storage, sampler=sampler,
                                   pruner=pruner), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False


def wait_for_parent(study: optuna.Study, timeout: float = PARENT_WAIT_S) -> str | None:
    """The parent run the study's creator records a moment after creating it; None if it never does (it died
    in between: this worker opens the parent instead) or if the study was made outside src.tune (it holds trials,
    e.g. enqueued ones, but no parent run: nobody is about to open one)."""
    if (parent_id := study.user_attrs.get("mlflow_parent_run_id")) is not None or study.get_trials(deepcopy=False):
        return parent_id
    log.info("waiting up to %.0f s for the worker that created study %s to open its MLflow parent run",
             timeout, study.study_name)
    deadline = time.monotonic() + timeout
    while (parent_id := study.user_attrs.get("mlflow_parent_run_id")) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if parent_id is None:
        log.warning("study %s has no MLflow parent run after %.0f s: opening one", study.study_name, timeout)
    return parent_id


def run_study(n_trials: int, timeout: float | None, storage: str, study_name: str, tune: TuneParams,
              train: TrainParams, shards_dir: Path = SHARD_DIR, out: Path = TUNE_DIR,
              space: dict | None = None) -> optuna.Study:
    """Create or resume the study and run until it holds `n_trials` finished trials (all workers together)."""
    import mlflow

    from src.training import tracking

    tracking.connect(tracking.resolve_uri(train.tracking_uri), train.experiment)
    study, created = open_study(study_name, storage_for(storage, tune.heartbeat_interval, tune.grace_period),
                                optuna.samplers.TPESampler(seed=tune.seed), make_pruner(tune.pruner))
    recover_orphans(study)
    parent_id = None if created else wait_for_parent(study)
    with mlflow.start_run(run_id=parent_id, run_name=None if parent_id else f"tune-{study_name}") as parent:
        if not parent_id:
            study.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
            mlflow.log_params({"study_name": study_name, "pruner": tune.pruner, "sampler_seed": tune.seed,
                               "epochs_per_trial": tune.epochs})
        note = f"Optuna study {study_name}: one child run per trial"
        set_shared_tags(parent.info.run_id, {"mlflow.note.content": note})
        study.optimize(
            Objective(train, tune.epochs, shards_dir, space or load_space()),
            timeout=timeout, show_progress_bar=True,  # no gc_after_trial: each trial starts with clear_session's
            catch=TRIAL_FAILURES + backend_failures(),  # recorded as failed; the sweep goes on
            callbacks=[StopAtTrials(n_trials)],
            # failed trials do not count towards n_trials; at most as many failures as trials still wanted
            n_trials=2 * max(n_trials - len(study.get_trials(deepcopy=False, states=StopAtTrials.FINISHED)), 0),
        )
        report(study, out, space or load_space(), train.monitor)
    return study


def set_shared_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Tags on a run that other workers may tag at the same moment. MLflow's SQL store looks for a tag, then inserts
    it, so of two simultaneous first writes one fails on the unique key; written again, it updates the row."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        try:
            client.set_tag(run_id, key, value)
        except MlflowException:
            client.set_tag(run_id, key, value)


def report(study: optuna.Study, out: Path, space: dict, monitor: str) -> None:
    """best_params.yaml, trials.csv and plots under `out`; the best trial tagged; the same logged to the parent."""
    import matplotlib

    matplotlib.use("Agg")
    import mlflow

    out.mkdir(parents=True, exist_ok=True)
    trials = study.trials_dataframe()
    with atomic_path(out / "trials.csv") as tmp:
        trials.to_csv(tmp, index=False)
    mlflow.log_artifact(str(out / "trials.csv"))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        log.warning("no trial completed: nothing to report")
        return
    best = study.best_trial
    values = suggest(optuna.trial.FixedTrial(best.params), space)
    write_text(out / "best_params.yaml", yaml.safe_dump(
        {"trial": best.number, f"best_{monitor}": float(best.value),
         "params": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}, sort_keys=False))
    mlflow.log_artifact(str(out / "best_params.yaml"))
    mlflow.log_metric(f"best_{monitor}", float(best.value))
    # tags, not params: workers sharing the parent run each write the best they see, and a later one may be better
    set_shared_tags(mlflow.active_run().info.run_id, {f"best_{k}": v for k, v in best.params.items()})
    if "mlflow_run_id" in best.user_attrs:
        set_shared_tags(best.user_attrs["mlflow_run_id"], {"best_trial": "true"})
    from optuna.visualization import matplotlib as plots

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    figures = {"optimization_history.png": plots.plot_optimization_history}
    if len(complete) >= 2:
        figures["param_importances.png"] = plots.plot_param_importances
    for name, plot in figures.items():
        try:
            figure = plot(study).figure
        except (ValueError, RuntimeError) as exc:  # e.g. importances need parameters that varied
            log.warning("no %s: %s", name, exc)
            continue
        figure.tight_layout()
        with atomic_path(out / name) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        mlflow.log_artifact(str(out / name))


def summary(study: optuna.Study) -> str:
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
    table["duration"] = table["duration"].dt.total_seconds().round(1)
    return table.to_markdown(index=False, floatfmt=".4f")


def apply_best(out: Path = TUNE_DIR, params_file: Path = PARAMS_FILE) -> dict:
    """Write experiments/tune/best_params.yaml into params.yaml's train section (comments kept)."""
    from src.profile import merge

    path = out / "best_params.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run a sweep first (python -m src.tune)")
    best = yaml.safe_load(path.read_text())["params"]
    base = TrainParams()
    overrides = {(f"train.model.{k}" if hasattr(base.model, k) else f"train.{k}"): v for k, v in best.items()}
    merge(overrides, params_file)
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune = params.load_or_exit("tune")
    parser.add_argument("--n-trials", type=int, default=tune.n_trials, help="finished trials the study should hold "
                        "(all workers together; default %(default)s)")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    parser.add_argument("--storage", default=tune.storage, help="journal file path or RDB URL (default: "
                        "experiments/tune/journal.log)")
    parser.add_argument("--study-name", default=tune.study_name, help="default %(default)s")
    parser.add_argument("--epochs", type=int, default=tune.epochs, help="epochs per trial (default %(default)s)")
    parser.add_argument("--heartbeat-interval", type=int, default=tune.heartbeat_interval,
                        help="RDB storage: seconds between a worker's heartbeats (default %(default)s)")
    parser.add_argument("--grace-period", type=int, default=tune.grace_period, help="RDB storage: a trial without "
                        "a heartbeat for this long is failed and retried once (default %(default)s)")
    parser.add_argument("--apply", action="store_true", help="write the best params into params.yaml and exit")
    parser.add_argument("--shards", type=Path, default=SHARD_DIR, help="shard folder (default: the pipeline's)")
    parser.add_argument("--out", type=Path, default=TUNE_DIR, help="where the study's reports go (default: "
                        "experiments/tune)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.apply:
        for key, value in apply_best(args.out).items():
            print(f"params.yaml: {key} = {value}")
        print("now run `dvc repro` to train the final model with them")
        return 0
    if not (args.shards / "manifest.json").exists():
        print(f"tune: no shards in {args.shards}: run `dvc repro shard` first", file=sys.stderr)
        return 2
    tune = replace(tune, epochs=args.epochs, heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period)
    train = params.load_or_exit("train")
    study = run_study(args.n_trials, args.timeout, args.storage, args.study_name, tune, train, args.shards, args.out)
    print(summary(study))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        print(f"best: trial {study.best_trial.number}, {train.monitor} {study.best_value:.4f}, {study.best_params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
