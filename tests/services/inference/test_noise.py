from __future__ import annotations

import numpy as np
import pytest

from services.inference import noise


def smooth(h: int = 240, w: int = 320) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (128 + 60 * np.sin(xx / 23.0) * np.cos(yy / 31.0) + 0.2 * xx).astype(np.float32)


@pytest.mark.parametrize("sigma", [2.0, 10.0, 25.0, 50.0])
def test_estimate_sigma_recovers_white_gaussian_noise(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma))
    noisy = smooth() + rng.normal(0, sigma, (240, 320)).astype(np.float32)
    assert noise.estimate_sigma(noisy) == pytest.approx(sigma, rel=0.06)


def test_estimate_sigma_of_a_clean_image_is_small_and_of_a_tiny_one_zero() -> None:
    assert noise.estimate_sigma(np.round(smooth())) < 1.0
    assert noise.estimate_sigma(np.ones((1, 50), np.float32)) == 0.0


def test_estimate_sigma_subsamples_big_planes() -> None:
    rng = np.random.default_rng(0)
    big = rng.normal(0, 7.0, (2100, 2100)).astype(np.float32)  # > MAX_COEFFICIENTS blocks
    assert noise.estimate_sigma(big) == pytest.approx(7.0, rel=0.03)


def test_luminance_replacement_keeps_chroma() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(40, 200, (20, 30, 3), dtype=np.uint8)
    y = noise.luminance(rgb)
    np.testing.assert_array_equal(noise.replace_luminance(rgb, y, y), rgb)
    out = noise.replace_luminance(rgb, y, y + 10)
    # Every channel moves by the luminance change, so Cb and Cr (differences) stay put.
    np.testing.assert_array_equal(out.astype(int) - rgb.astype(int), 10)
    np.testing.assert_allclose(noise.luminance(out), y + 10, atol=0.51)
