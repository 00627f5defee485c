"""Tests of src/model/."""
