"""Automatic image colorization: DVC pipeline, Keras models, MLflow tracking, Optuna tuning."""
from src import determinism

# Before any module can import TensorFlow: it reads these when its library loads (src/determinism.py).
determinism.apply_env()
