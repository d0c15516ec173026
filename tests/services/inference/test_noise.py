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


def test_opponent_planes_round_trip_and_stay_in_range() -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = (255, 0, 255), (0, 255, 0)  # the extremes of both chroma planes
    planes = noise.opponent_planes(rgb)
    assert all(p.min() >= 0 and p.max() <= 255 for p in planes)
    np.testing.assert_array_equal(noise.from_opponent(planes), rgb)


def photo_like(h: int = 256, w: int = 320) -> np.ndarray:
    """Colour with texture, dark and saturated areas (so that 8-bit clipping matters)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 120 * np.sin(xx / 40.0) * np.cos(yy / 50.0)
    texture = 6 * np.sin(xx / 1.7) * np.sin(yy / 2.3) * (xx > w // 2)
    return np.stack([base + texture, 0.8 * base + 20, 255 - base], axis=-1)


@pytest.mark.parametrize("sigma", [5.0, 15.0, 25.0, 50.0])
def test_opponent_sigmas_of_clipped_colour_noise(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma))
    clean = photo_like()
    noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
    if sigma >= 25:
        assert ((noisy == 0) | (noisy == 255)).mean() > 0.01  # clipping is in play
    sigmas = noise.estimate_opponent_sigmas(noisy)
    assert sigmas == pytest.approx([sigma] * 3, rel=0.1)
    assert noise.rgb_sigma(sigmas) == pytest.approx(sigma, rel=0.1)


def test_opponent_sigmas_of_luma_only_noise_have_quiet_chroma() -> None:
    rng = np.random.default_rng(9)
    clean = photo_like()
    grain = rng.normal(0, 20, clean.shape[:2])[..., None]
    noisy = np.clip(np.round(clean + grain), 0, 255).astype(np.uint8)
    y, c1, c2 = noise.estimate_opponent_sigmas(noisy)
    assert y == pytest.approx(20 * np.sqrt(3), rel=0.1)  # the same noise in R, G and B adds up
    assert max(c1, c2) < 0.2 * y


@pytest.mark.parametrize("sigma", [2.0, 5.0, 12.0])
def test_low_noise_on_a_flat_colour_is_read_without_bias(sigma: float) -> None:
    """Below PCA_BELOW the weak-texture patch estimator gives the planes' σ: white noise spreads
    evenly over the patches' principal components."""
    rng = np.random.default_rng(int(sigma * 10))
    clean = np.broadcast_to(np.array([140.0, 110.0, 90.0]), (256, 320, 3))
    noisy = np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)
    assert sigma < noise.PCA_BELOW
    # 8-bit rounding adds its own 1/12 to the variance of every plane.
    expected = np.sqrt(sigma**2 + 1 / 12)
    assert noise.estimate_opponent_sigmas(noisy) == pytest.approx([expected] * 3, rel=0.03)


def test_low_noise_is_read_past_fine_texture() -> None:
    """Fine texture everywhere lifts the block estimator's luma (it reads texture as noise);
    the patch estimator keeps it to the few principal directions it occupies."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:256, 0:320]
    texture = 8 * np.sin(2.2 * xx) * np.sin(2.5 * yy) + 20 * np.sin(xx / 9.0)  # fabric-like
    clean = np.stack([128 + texture, 120 + 0.9 * texture, 110 + 0.8 * texture], axis=-1)
    noisy = np.clip(np.round(clean + rng.normal(0, 4.0, clean.shape)), 0, 255).astype(np.uint8)
    assert noise._block_sigmas(noisy)[0] > 1.2 * 4.0  # what the blocks alone read
    assert noise.estimate_opponent_sigmas(noisy) == pytest.approx([4.0] * 3, rel=0.1)
