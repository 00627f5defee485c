"""One module per DVC stage, each runnable as `python -m src.stages.<stage>`."""
