"""Tests of src/stages/: each DVC stage on small real data."""
