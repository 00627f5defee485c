"""Scale-out figures on this machine: Optuna trials per hour with 1 and 2 workers on PostgreSQL, and what an MLflow
call costs through a tracking server (on PostgreSQL) against a local sqlite file.

    python -m benchmarks.scale_out [--shards data/shards] [--trials 6]   # writes experiments/benchmarks/scale_out.json

Needs the PostgreSQL server of docs/scaling.md on 127.0.0.1:5432 and the pipeline's shards (`dvc repro shard`).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import save
from src.core.paths import SHARD_DIR
from tests.repo import env
from tests.services import PG_HOST, PG_PORT, PG_USER, mlflow_server, postgres_admin


def database(admin) -> str:
    name = f"colorizer_bench_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return name


def sweep(workers: int, trials: int, shards: Path, admin, tmp: Path) -> float:
    """Wall seconds for `workers` processes to finish `trials` trials of one study together."""
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database(admin)}"
    tracking = f"sqlite:///{tmp / f'mlflow-{workers}.db'}"
    subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.MlflowClient({tracking!r}).search_experiments()"],
                   check=True, env=env())  # schema first, as `dvc repro` would have made it
    command = [sys.executable, "-m", "src.tune", "--storage", url, "--n-trials", str(trials), "--epochs", "2",
               "--study-name", "bench", "--shards", str(shards), "--out", str(tmp / f"out-{workers}")]
    start = time.perf_counter()
    procs = [subprocess.Popen(command, env=env() | {"MLFLOW_TRACKING_URI": tracking}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(workers)]
    if any(p.wait() for p in procs):
        raise RuntimeError(f"a tune worker failed ({workers} workers)")
    return time.perf_counter() - start


def call_latency_ms(uri: str, calls: int = 200) -> float:
    """Median milliseconds of one mlflow.log_metric call against `uri` (new run, one metric per call)."""
    code = f"""
import statistics, time, mlflow
mlflow.set_tracking_uri({uri!r})
mlflow.set_experiment("latency")
with mlflow.start_run():
    times = []
    for step in range({calls}):
        t = time.perf_counter(); mlflow.log_metric("x", step, step=step); times.append(time.perf_counter() - t)
print(statistics.median(times) * 1000)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env())
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path, default=SHARD_DIR)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args(argv)
    admin = postgres_admin()
    results: dict = {"trials": args.trials, "epochs_per_trial": 2}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for workers in (1, 2):
            wall = sweep(workers, args.trials, args.shards, admin, tmp)
            results[f"workers_{workers}"] = {"wall_s": round(wall, 1), "trials_per_hour": round(args.trials * 3600 / wall)}
            print(f"{workers} worker(s): {args.trials} trials in {wall:.0f} s", flush=True)
        results["sqlite_log_metric_ms"] = round(call_latency_ms(f"sqlite:///{tmp / 'latency.db'}"), 2)
        with mlflow_server(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database(admin)}", tmp / "art") as uri:
            results["server_log_metric_ms"] = round(call_latency_ms(uri), 2)
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'colorizer_bench_%'")
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    results["speedup_2_workers"] = round(results["workers_1"]["wall_s"] / results["workers_2"]["wall_s"], 2)
    print(save("scale_out", results).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
