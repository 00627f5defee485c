"""Automatic image colorization: DVC pipeline, Keras models, MLflow tracking, Optuna tuning."""
