"""params.yaml is read into typed dataclasses: a wrong key or type is named with what was expected."""
from __future__ import annotations

import pytest

from src.core import params


@pytest.mark.parametrize(("section", "raw", "message"), [
    ("hsv_split", {"image_size": "64"}, "hsv_split.image_size must be an integer, got '64' (str)"),
    ("train", {"epochs": 2.5}, "train.epochs must be an integer, got 2.5 (float)"),
    ("train", {"flip": 1}, "train.flip must be true or false, got 1 (int)"),
    ("train", {"epochs": True}, "train.epochs must be an integer, got True (bool)"),
    ("train", {"model": {"target": "lab"}}, "train.model.target must be one of ['hs', 'chroma', 'cbcr', 'bins', "
                                           "'cbcr_bins'], got 'lab'"),
    ("train", {"model": {"decoder_widths": [64, "32"]}}, "train.model.decoder_widths[1] must be an integer"),
    ("train", {"scale": [0.7]}, "train.scale must be a list of 2 of float, got [0.7]"),
    ("train", {"model": 3}, "train.model must be a mapping of keys to values, got 3"),
    ("evaluate", {"gate_margin_db": "0.1"}, "evaluate.gate_margin_db must be a number, got '0.1' (str)"),
    ("train", {"epoch": 3}, "unknown TrainParams keys: ['epoch']"),
])
def test_a_wrong_value_names_its_key_the_expected_type_and_the_value(section, raw, message):
    with pytest.raises(ValueError) as refused:
        params.from_dict(section, raw)
    assert message in str(refused.value)


def test_right_values_are_kept_with_lists_as_tuples_and_integers_as_numbers():
    p = params.from_dict("train", {"learning_rate": 1, "scale": [1, 2.5], "model": {"decoder_widths": [8, 4]}})
    assert p.learning_rate == 1.0 and isinstance(p.learning_rate, float) and p.scale == (1.0, 2.5)
    assert p.model.decoder_widths == (8, 4) and params.from_dict("evaluate", {"gate_margin_db": None}).gate_margin_db is None
    assert params.load("train") == params.from_dict("train", params.load_raw()["train"])  # the checked-in file is valid
