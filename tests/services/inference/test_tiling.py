from __future__ import annotations

import itertools

import numpy as np
import pytest

from services.inference import tiling


def local_filter(x: np.ndarray, steps: int) -> np.ndarray:
    """A stand-in for a DnCNN: `steps` 3x3 layers with circular padding (receptive radius =
    steps), non-linear so that a wrong blend cannot cancel out."""
    for _ in range(steps):
        p = np.pad(x, 1, mode="wrap")
        x = sum(p[i : i + x.shape[0], j : j + x.shape[1]] for i in range(3) for j in range(3)) / 9
        x = np.tanh(x * 1.5)
    return x.astype(np.float32)


def tiled(plane: np.ndarray, size: int, halo: int, overlap: int, steps: int) -> np.ndarray:
    plan = tiling.plan(*plane.shape, size, halo, overlap)
    blender = tiling.Blender(plan)
    for tile in plan.tiles():
        window = tiling.window(plane, tile, halo)
        assert window.shape == plan.window_shape
        blender.add(tile, local_filter(window, steps))
    return blender.out


def whole(plane: np.ndarray, steps: int) -> np.ndarray:
    """The same operator on the whole image, the image mirrored around it (what tiles see)."""
    padded = np.pad(plane, steps, mode="reflect")
    return local_filter(padded, steps)[steps:-steps, steps:-steps]


@pytest.mark.parametrize(
    ("shape", "size", "overlap"),
    [((70, 95), 32, 8), ((64, 64), 32, 0), ((20, 130), 40, 12), ((33, 17), 64, 8)],
)
def test_tiles_with_a_full_halo_equal_the_whole_image(
    shape: tuple[int, int], size: int, overlap: int
) -> None:
    rng = np.random.default_rng(3)
    plane = rng.random(shape, dtype=np.float32)
    steps = 4
    np.testing.assert_allclose(
        tiled(plane, size, steps, overlap, steps), whole(plane, steps), atol=1e-5
    )


def test_a_short_halo_is_blended_without_seams() -> None:
    # With too little context the tiles disagree near their edges; the cross-fade keeps the
    # error small and smooth instead of a step at every tile boundary.
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    plane = (0.5 + 0.4 * np.sin(6 * xx) * np.cos(4 * yy)).astype(np.float32)
    exact = whole(plane, 6)[8:-8, 8:-8]  # away from the image border, where only seams differ
    blended = np.abs(tiled(plane, 32, 2, 16, 6)[8:-8, 8:-8] - exact).max()
    hard = np.abs(tiled(plane, 32, 2, 0, 6)[8:-8, 8:-8] - exact).max()  # butt joints
    assert blended < hard / 5
    assert blended < 0.005


def test_weights_are_a_partition_of_unity() -> None:
    plan = tiling.plan(100, 77, 30, 5, 7)
    blender = tiling.Blender(plan)
    for tile in plan.tiles():
        blender.add(tile, np.ones(plan.window_shape, np.float32))
    np.testing.assert_allclose(blender.out, 1.0, atol=1e-6)


def test_plan_splits_each_axis_evenly_into_equal_tiles() -> None:
    plan = tiling.plan(1000, 600, 256, 17, 8)
    assert plan.row_starts == (0, 248, 496, 744)  # 1000 needs four full tiles
    # 600 needs three, so each is ~208 long instead of three 256s shifted over each other.
    assert (plan.tile_width, plan.col_starts) == (208, (0, 196, 392))
    assert len(plan) == 12 and plan.window_shape == (256 + 34, 208 + 34)
    assert {(t.y1 - t.y0, t.x1 - t.x0) for t in plan.tiles()} == {(256, 208)}
    small = tiling.plan(40, 50, 256, 6, 8)
    assert len(small) == 1 and small.window_shape == (52, 62)
    # Just over one tile: two tiles of about half the size.
    assert (
        tiling.plan(320, 320, 256, 6, 8).tile_height,
        len(tiling.plan(320, 320, 256, 6, 8)),
    ) == (
        176,
        4,
    )


@pytest.mark.parametrize("length", [17, 100, 255, 256, 257, 511, 777, 1000, 4097])
def test_every_axis_is_covered_with_the_overlap(length: int) -> None:
    plan = tiling.plan(length, 5, 256, 0, 8)
    starts, tile = plan.row_starts, plan.tile_height
    assert starts[0] == 0 and starts[-1] + tile == length and tile <= 256
    assert all(b - a <= tile - 8 for a, b in itertools.pairwise(starts))


def test_reflect_mirrors_without_repeating_the_edge() -> None:
    idx = np.arange(-7, 12)
    expected = np.pad(np.arange(5), 7, mode="reflect")[: len(idx)]
    np.testing.assert_array_equal(tiling.reflect(idx, 5), expected)
    np.testing.assert_array_equal(tiling.reflect(np.arange(-3, 4), 1), np.zeros(7))


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        tiling.plan(0, 10, 32, 4, 4)
    with pytest.raises(ValueError):
        tiling.plan(10, 10, 32, 4, 32)
