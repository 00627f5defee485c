"""Training and tracking: the fit loop, MLflow runs, provenance, the model registry."""
