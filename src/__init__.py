"""Automatic image colorization: DVC pipeline, Keras models, MLflow tracking, Optuna tuning."""
import sys

from src.core import determinism, quiet

# Before any module can import TensorFlow: it reads these when its library loads (src/core/determinism.py), and logs
# its native start-up lines then (src/core/quiet.py). Tests check the filter on real subprocesses, not on themselves.
determinism.apply_env()
if "pytest" not in sys.modules:
    quiet.native_stderr()
