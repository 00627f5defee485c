"""Tests of src/core/."""
