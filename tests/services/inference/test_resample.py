"""Reduced-resolution planes and the luma-guided way back (services.inference.resample)."""

from __future__ import annotations

import numpy as np

from services.inference import resample


def edge_planes(height: int = 40, width: int = 48, at: int = 23) -> tuple[np.ndarray, np.ndarray]:
    """A luma and a chroma plane with the same vertical edge, between two columns that one
    2x2 block of the reduced grid straddles (`at` odd)."""
    left = np.arange(width)[None, :].repeat(height, axis=0) < at
    luma = np.where(left, 30.0, 230.0).astype(np.float32)
    chroma = np.where(left, 100.0, 150.0).astype(np.float32)
    return luma, chroma


def test_box_is_the_window_mean_with_the_edges_repeated() -> None:
    x = np.random.default_rng(0).normal(size=(7, 9))
    padded = np.pad(x, 2, mode="edge")
    expected = np.array([[padded[i : i + 5, j : j + 5].mean() for j in range(9)] for i in range(7)])
    np.testing.assert_allclose(resample.box(x, 2), expected, atol=1e-12)


def test_a_chroma_edge_that_follows_the_luma_comes_back_sharper_than_bilinear() -> None:
    luma, chroma = edge_planes()
    low = resample.downscale(chroma, 2)
    assert low.shape == (20, 24)
    plain = resample.upscale(low, 2, *chroma.shape)
    guided = resample.upscale_guided(low, resample.guide(luma, 2))
    assert guided.shape == chroma.shape and guided.dtype == np.float32
    plain_error = float(np.abs(plain - chroma).mean())
    guided_error = float(np.abs(guided - chroma).mean())
    assert plain_error > 0.5  # bilinear smears the edge over the straddling block
    assert guided_error < plain_error / 3
    # Away from the edge both are exact.
    np.testing.assert_allclose(guided[:, :18], 100.0, atol=1e-3)
    np.testing.assert_allclose(guided[:, 28:], 150.0, atol=1e-3)


def test_flat_planes_come_back_as_bilinear_leaves_them() -> None:
    """A flat chroma plane stays flat whatever the luma; a flat luma adds nothing to bilinear;
    odd sizes are cropped back."""
    luma, chroma = edge_planes(height=39, width=47)
    flat = np.full((20, 24), 127.5, np.float32)
    out = resample.upscale_guided(flat, resample.guide(luma, 2))
    assert out.shape == (39, 47)
    np.testing.assert_allclose(out, 127.5, atol=1e-3)
    textured = resample.downscale(
        chroma + np.random.default_rng(1).normal(0, 5, chroma.shape).astype(np.float32), 2
    )
    flat_luma = np.full_like(luma, 90.0)
    np.testing.assert_allclose(
        resample.upscale_guided(textured, resample.guide(flat_luma, 2)),
        resample.upscale(textured, 2, 39, 47),
        atol=1e-3,
    )
