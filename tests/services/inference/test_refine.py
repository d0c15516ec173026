"""The chroma refinement (services/inference/refine.py) on small synthetic planes."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference import noise, refine


def planes_of(rgb: np.ndarray) -> list[np.ndarray]:
    return noise.opponent_planes(np.clip(np.round(rgb), 0, 255).astype(np.uint8))


def two_colours(height: int = 40, width: int = 56) -> np.ndarray:
    """Red on the left, green on the right, the same luma: an edge in the chroma only."""
    rgb = np.zeros((height, width, 3))
    rgb[:, : width // 2] = (200, 60, 40)
    rgb[:, width // 2 :] = (40, 200, 60)
    return rgb


@pytest.mark.parametrize("rows", [1, 5, 9, 16, 64])
def test_the_result_does_not_depend_on_the_strips(rows: int) -> None:
    rng = np.random.default_rng(3)
    planes = [rng.uniform(0, 255, (37, 23)).astype(np.float32) for _ in range(3)]
    whole = refine.chroma_rows(planes, 20.0, 0, 37)
    parts = [refine.chroma_rows(planes, 20.0, a, b) for a, b in refine.strips(37, rows)]
    for k in range(2):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    assert refine.strips(37, rows)[-1][1] == 37


def test_a_weighted_mean_keeps_flat_planes_and_the_targets_range() -> None:
    flat = [np.full((20, 30), v, np.float32) for v in (90.0, 140.0, 110.0)]
    c1, c2 = refine.chroma_rows(flat, 10.0, 0, 20)
    np.testing.assert_allclose(c1, 140.0, rtol=1e-6)
    np.testing.assert_allclose(c2, 110.0, rtol=1e-6)
    rng = np.random.default_rng(1)
    planes = [rng.uniform(0, 255, (20, 30)).astype(np.float32) for _ in range(3)]
    out = refine.chroma_rows(planes, 30.0, 0, 20)
    for k in (1, 2):  # a mean of values of the plane: never outside them
        assert (
            planes[k].min() - 1e-3 <= out[k - 1].min() <= out[k - 1].max() <= planes[k].max() + 1e-3
        )


def test_it_removes_chroma_noise_without_bleeding_across_a_colour_edge() -> None:
    clean = planes_of(two_colours())
    rng = np.random.default_rng(7)
    sigma = 25.0
    # A denoised image as the refinement gets it (σ 25 before): some noise left in each plane.
    left = [clean[0] + rng.normal(0, 1.5, clean[0].shape).astype(np.float32)]
    left += [c + rng.normal(0, 3.0, c.shape).astype(np.float32) for c in clean[1:]]
    c1, c2 = refine.chroma_rows(left, sigma, 0, clean[0].shape[0])
    for before, after, truth in zip(left[1:], (c1, c2), clean[1:], strict=True):
        error_before = np.sqrt(np.mean((before - truth) ** 2))
        error_after = np.sqrt(np.mean((after - truth) ** 2))
        assert error_after < error_before / 2
        # At the edge the two sides stay apart (no mean of red and blue, as a blur would give).
        edge = truth.shape[1] // 2
        jump = abs(float(truth[0, edge] - truth[0, edge - 1]))
        assert jump > 30
        for col in (edge - 1, edge):
            assert np.abs(after[:, col] - truth[:, col]).max() < 0.1 * jump
