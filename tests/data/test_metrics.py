import cv2
import numpy as np
import pytest

from src.data import metrics
from tests.conftest import photo


def test_identical_images_score_perfectly():
    image = photo(seed=1)
    m = metrics.image_metrics(image, image)
    assert m["rmse"] == 0 and m["psnr"] == 100 and m["hs_rmse"] == 0 and m["hue_error"] == 0


def test_psnr_matches_its_definition():
    truth = np.full((4, 4, 3), 100, np.uint8)
    pred = truth + np.uint8(10)
    assert metrics.rmse(pred, truth) == pytest.approx(10)
    assert metrics.psnr(pred, truth) == pytest.approx(20 * np.log10(255 / 10))


def test_hue_error_is_circular_but_the_original_hs_rmse_is_not():
    red_a = cv2.cvtColor(np.array([[[1, 255, 200]]], np.uint8), cv2.COLOR_HSV2BGR)
    red_b = cv2.cvtColor(np.array([[[178, 255, 200]]], np.uint8), cv2.COLOR_HSV2BGR)
    assert metrics.hue_error(red_a, red_b) == pytest.approx(6.0)  # 3 steps of 2 degrees across the wrap
    assert metrics.hs_rmse(red_a, red_b) > 100  # the linear hue term charges 177 steps


def test_colourfulness_is_zero_for_gray_and_grows_with_colour():
    gray = cv2.cvtColor(cv2.cvtColor(photo(seed=2), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert metrics.colourfulness(gray) == 0
    assert metrics.colourfulness(photo(seed=2)) > 20
