"""Every pipeline path, declared once. dvc.yaml names the same paths; tests/test_dvc_yaml.py checks they agree."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"
DATA = ROOT / "data"
RAW_DIR = DATA / "raw"
HSV_DIR = DATA / "hsv"
SHARD_DIR = DATA / "shards"
MODEL_DIR = ROOT / "models"
REPORTS = ROOT / "reports"
DOWNLOAD_CACHE = ROOT / ".cache" / "downloads"

HSV_REPORT = REPORTS / "hsv_split.csv"
HSV_METRICS = REPORTS / "hsv_split.json"
SHARD_MANIFEST = SHARD_DIR / "manifest.json"
