"""`palette.median_cut` gives what Pillow's median cut gives: the stored palettes do not change."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from pixmesh.common.v1 import metadata_pb2
from services.metadata import palette, pixels

from .images import scene


def _pillow(rgb: npt.NDArray[np.uint8], colors: int) -> tuple[list[list[int]], list[int]]:
    """Pillow's own answer: its palette and how many pixels each entry was given."""
    quantised = Image.fromarray(rgb, "RGB").quantize(colors, method=Image.Quantize.MEDIANCUT)
    flat = quantised.getpalette() or []
    size = len(flat) // 3
    counts = np.bincount(np.asarray(quantised).ravel(), minlength=size)
    return [flat[3 * i : 3 * i + 3] for i in range(size)], [int(c) for c in counts]


def _same(rgb: npt.NDArray[np.uint8], colors: int) -> None:
    entries, counts = palette.median_cut(rgb, colors)
    assert (entries.tolist(), counts.tolist()) == _pillow(rgb, colors)
    assert counts.sum() == rgb.shape[0] * rgb.shape[1]


def _sample(seed: int, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """What pixels.colors quantises: the working thumbnail reduced to ~128 px."""
    image = scene(seed, size)
    image.thumbnail((pixels.WORKING_SIZE, pixels.WORKING_SIZE), Image.Resampling.LANCZOS)
    factor = max(1, max(image.size) // pixels.PALETTE_WORKING_SIZE)
    return np.asarray(image.reduce(factor) if factor > 1 else image)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("colors", [5, 2, 16])
def test_photo_like_samples(seed: int, colors: int) -> None:
    size = [(800, 600), (600, 800), (1200, 300), (500, 500)][seed % 4]
    _same(_sample(seed, size), colors)


@pytest.mark.parametrize("seed", range(40))
def test_few_colours_with_equal_counts(seed: int) -> None:
    # Few colours in equal numbers: boxes with equal pixel counts, where the heap's order of
    # equal boxes decides which is split, and palette colours tied in distance from a pixel.
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 40))
    colours = rng.integers(0, 256, (k, 3)) // int(rng.integers(1, 80)) * int(rng.integers(1, 4))
    colours = np.clip(colours, 0, 255)
    height, width = k * int(rng.integers(1, 5)), int(rng.integers(1, 20))
    rows = np.repeat(np.arange(k), height // k)
    rgb = colours[rows][:, None, :].repeat(width, axis=1).astype(np.uint8)
    for colors in (2, 3, 5, 8, 12):
        _same(rgb, colors)


@pytest.mark.parametrize("seed", range(20))
def test_noise_and_coarse_levels(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    height, width = (int(v) for v in rng.integers(1, 90, 2))
    step = int(rng.integers(1, 96))
    rgb = (rng.integers(0, 256, (height, width, 3)) // step * step).astype(np.uint8)
    _same(rgb, 5)


def test_one_colour_and_one_pixel() -> None:
    _same(np.full((7, 5, 3), (12, 200, 31), dtype=np.uint8), 5)
    _same(np.array([[[1, 2, 3]]], dtype=np.uint8), 5)
    _same(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8), 5)


def test_more_distinct_colours_than_pillows_table_is_refused() -> None:
    # Past 65,536 distinct colours Pillow coarsens them first: not reproduced, so refused.
    values = np.arange(65_537, dtype=np.uint32)
    rgb = np.stack([values >> 16, (values >> 8) & 255, values & 255], axis=1).astype(np.uint8)
    with pytest.raises(ValueError, match="distinct"):
        palette.median_cut(rgb.reshape(1, -1, 3), 5)


@pytest.mark.parametrize("seed", range(4))
def test_colors_lists_the_palette_as_pillows_getcolors_ordered_it(seed: int) -> None:
    image = scene(seed, (640, 480))
    image.thumbnail((pixels.WORKING_SIZE, pixels.WORKING_SIZE), Image.Resampling.LANCZOS)

    got = pixels.colors(image)

    sample = image.reduce(max(1, max(image.size) // pixels.PALETTE_WORKING_SIZE))
    quantised = sample.quantize(pixels.PALETTE_SIZE, method=Image.Quantize.MEDIANCUT)
    flat = quantised.getpalette() or []
    counts = sorted(quantised.getcolors(pixels.PALETTE_SIZE) or [], reverse=True)
    total = sum(count for count, _ in counts)
    expected = metadata_pb2.Colors()
    for count, index in counts:
        assert isinstance(index, int)  # a "P" image reports palette indices
        colour = "#{:02x}{:02x}{:02x}".format(*flat[3 * index : 3 * index + 3])
        expected.palette.add(color=colour, fraction=round(count / total, 4))
    assert list(got.palette) == list(expected.palette)
    assert len(expected.palette) == pixels.PALETTE_SIZE


def test_equal_weighted_ranges_split_the_first_axis() -> None:
    # Red spans 150 levels and green 77: 150 x 77 = 77 x 150, a tie Pillow gives to red.
    colours = [(0, 0, 0), (150, 0, 0), (0, 77, 0), (150, 77, 0)]
    rows = [colour for count, colour in enumerate(colours, start=1) for _ in range(count)]
    rgb = np.array(rows, dtype=np.uint8).reshape(-1, 1, 3)
    _same(rgb, 2)
    _same(rgb, 3)
