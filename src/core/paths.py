"""Every pipeline path, declared once in code. dvc.yaml repeats them for DVC; tests/test_dvc_pipeline.py checks that
each stage there declares the modules it imports."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "params.yaml"
DVC_LOCK = ROOT / "dvc.lock"
DATA = ROOT / "data"
RAW_DIR = DATA / "raw"
HSV_DIR = DATA / "hsv"
SHARD_DIR = DATA / "shards"
MODEL_DIR = ROOT / "models"
REPORTS = ROOT / "reports"
MLFLOW_DB = ROOT / "mlflow.db"  # the default tracking store
DOWNLOAD_CACHE = ROOT / ".cache" / "downloads"  # outside DVC outputs: an interrupted download resumes
TRAIN_CACHE = ROOT / ".cache" / "train"  # resume state of a killed training run

HSV_REPORT = REPORTS / "hsv_split.csv"
HSV_METRICS = REPORTS / "hsv_split.json"
TRAIN_METRICS = REPORTS / "train.json"
TRAIN_HISTORY = REPORTS / "train_history.csv"
EVAL_METRICS = REPORTS / "eval.json"
EVAL_IMAGES = REPORTS / "eval_images.csv"
EVAL_SAMPLES = REPORTS / "eval_samples.png"
TUNE_DIR = ROOT / "experiments" / "tune"
SEARCH_SPACE = ROOT / "experiments" / "search_space.yaml"
EVAL_BASELINE = ROOT / "experiments" / "baseline_eval.json"  # committed: the CI gate compares against it


def tracking_uri(configured: str = "") -> str:
    """MLflow's tracking URI: the param, else $MLFLOW_TRACKING_URI, else an absolute sqlite URI at the repository
    root (absolute, because DVC experiments run in temporary copies of the repository)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{MLFLOW_DB}"


def store_absent(uri: str) -> bool:
    """A sqlite store whose file does not exist yet (nothing to read; never create one just to look)."""
    return uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()
