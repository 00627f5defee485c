"""Where a result came from: the git commit, the params hash and the md5s DVC recorded in dvc.lock."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from src.core.paths import DVC_LOCK, PARAMS_FILE, ROOT


def git_dirty(root: Path = ROOT) -> str:
    """`git status --porcelain` of tracked files ('' when clean)."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                          text=True, check=True).stdout.strip()


def git_commit(root: Path = ROOT) -> str:
    """HEAD's hash, '-dirty' appended when tracked files changed; 'unknown' outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        return out.stdout.strip() + ("-dirty" if git_dirty(root) else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def params_sha256(path: Path = PARAMS_FILE) -> str:
    """A hash of the params' values (not their comments or layout)."""
    values = yaml.safe_load(path.read_text()) or {}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def lock_stages(lock: Path = DVC_LOCK) -> dict:
    """dvc.lock's stages ({} before the first run)."""
    return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}


def lock_stage(stage: str, lock: Path = DVC_LOCK) -> dict:
    """dvc.lock's record of one stage ({} before its first run)."""
    return lock_stages(lock).get(stage, {})


def dvc_hash(out: str, lock: Path = DVC_LOCK) -> str:
    """The md5 DVC recorded in dvc.lock for an output path (relative to the repo), or '' before the first run."""
    for stage in lock_stages(lock).values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return entry.get("md5", "")
    return ""


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
