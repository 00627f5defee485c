"""A throwaway copy of this repository (working tree, committed into a fresh git repo) for real DVC runs."""
from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from tests.conftest import ROOT


def env() -> dict[str, str]:
    """The environment a user has after activating the venv: its python first on PATH.

    MLFLOW_* variables are dropped: mlflow.set_tracking_uri() in earlier tests exports one.
    """
    bin_dir = str(Path(sys.executable).parent)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return clean | {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1",
                         "PYTHONUNBUFFERED": "1"}


def run(args: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=kwargs.pop("env", env()), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def copy_repo(dest: Path) -> Path:
    """Copy tracked and untracked-but-not-ignored files to `dest` and commit them there."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], dest)
    return dest


def dvc(*args: str, cwd: Path, check: bool = True, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check, env=env() | (env_extra or {}))


# Where MLflow's sqlite store records absolute artifact locations (src/training/tracking.py puts them beside it)
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def variant(built: Path, tmp_path: Path) -> Path:
    """A copy of a built repo (its DVC cache, data and MLflow store too): only changed stages rerun. The store's
    artifact locations move with it: left absolute, the copy's runs would write into the original while other
    tests copy it (a fresh clone's run once failed on a staging file that vanished mid-copy)."""
    repo = tmp_path / "variant"
    shutil.copytree(built, repo, symlinks=True)
    if (repo / "mlflow.db").exists():
        with closing(sqlite3.connect(repo / "mlflow.db")) as db, db:
            for (table, column), moved in itertools.product(ARTIFACT_COLUMNS, ((str(built), str(repo)),
                                                                              (built.as_uri(), repo.as_uri()))):
                db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", moved)
    return repo
