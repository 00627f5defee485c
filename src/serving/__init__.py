"""Colour for users: which model to serve, the MLflow pyfunc, provenance stamps on the outputs."""
