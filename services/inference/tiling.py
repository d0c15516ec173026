"""Cut a plane into overlapping tiles, and blend the denoised tiles back without seams.

Memory is what bounds the tile size: a DnCNN holds 64 float32 feature maps per pixel, so a
whole 24-megapixel photo would need gigabytes; a tile needs megabytes, whatever the image size.

Each tile's *core* is a `size`×`size` square of the output; its *window* adds `halo` pixels on
every side. With `halo` at least the model's receptive radius (one pixel per 3x3 layer) every
core pixel sees exactly the pixels it would see in a whole-image pass, so the tiles agree where
they overlap. Outside the image the window reflects the image (mirror without repeating the
edge), which also keeps the network's circular padding away from every pixel that is kept.
Neighbouring cores overlap by `overlap` pixels and are cross-faded there with linear weights
that sum to one, so a halo smaller than the receptive field (a faster, approximate setting)
still leaves no visible seam.

Each axis is split evenly: as few tiles as `size` allows, each just long enough (rounded up to
a multiple of `ALIGN`) to cover the image with the overlap, so an image a little larger than a
tile costs two half tiles, not two whole ones. Tiles of one image share a shape, and images of
the same size share it too, so the batcher can stack them across tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    # The core, in image coordinates: rows [y0, y1), columns [x0, x1).
    y0: int
    y1: int
    x0: int
    x1: int
    # Index into TilePlan.row_weights / col_weights.
    row: int
    col: int


ALIGN = 16


@dataclass(frozen=True)
class TilePlan:
    height: int
    width: int
    tile_height: int
    tile_width: int
    halo: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.tile_height + 2 * self.halo, self.tile_width + 2 * self.halo

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def tiles(self) -> Iterator[Tile]:
        th, tw = self.tile_height, self.tile_width
        for r, y in enumerate(self.row_starts):
            for c, x in enumerate(self.col_starts):
                yield Tile(y, y + th, x, x + tw, r, c)


def plan(height: int, width: int, size: int, halo: int, overlap: int) -> TilePlan:
    """Tiles of at most `size`x`size` core pixels overlapping by at least `overlap`."""
    if height < 1 or width < 1:
        raise ValueError(f"empty plane {width}x{height}")
    if size < 1 or halo < 0 or not 0 <= overlap < size:
        raise ValueError(f"bad tiling: size {size}, halo {halo}, overlap {overlap}")
    rows, th = _axis(height, size, overlap)
    cols, tw = _axis(width, size, overlap)
    return TilePlan(height, width, th, tw, halo, rows, cols)


def _axis(length: int, size: int, overlap: int) -> tuple[tuple[int, ...], int]:
    """(starts, tile length) along one axis."""
    if length <= size:
        return (0,), length
    n = -(-(length - overlap) // (size - overlap))  # ceil: fewest tiles that can cover it
    tile = -(-(length + (n - 1) * overlap) // n)
    tile = min(size, -(-tile // ALIGN) * ALIGN)
    # Evenly spaced; flooring keeps every gap <= tile - overlap, the last tile ends at the edge.
    return tuple((i * (length - tile)) // (n - 1) for i in range(n)), tile


def reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer positions onto 0..n-1 by mirroring at the edges (…2 1 0 1 2…)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    out: np.ndarray = np.where(m < n, m, period - m)
    return out


def window(plane: np.ndarray, tile: Tile, halo: int) -> np.ndarray:
    """The tile's input: its core plus `halo` pixels around it, mirrored outside the plane."""
    h, w = plane.shape
    if tile.y0 >= halo and tile.x0 >= halo and tile.y1 + halo <= h and tile.x1 + halo <= w:
        return plane[tile.y0 - halo : tile.y1 + halo, tile.x0 - halo : tile.x1 + halo].copy()
    rows = reflect(np.arange(tile.y0 - halo, tile.y1 + halo), h)
    cols = reflect(np.arange(tile.x0 - halo, tile.x1 + halo), w)
    out: np.ndarray = plane[np.ix_(rows, cols)]
    return out


def _weights(starts: tuple[int, ...], size: int, length: int) -> list[np.ndarray]:
    """Per-tile 1-D weights along one axis: ramps across each overlap, normalised to sum to 1."""
    raw = []
    for i, a in enumerate(starts):
        t = np.arange(size, dtype=np.float64)
        w = np.ones(size)
        if i > 0 and (ov := starts[i - 1] + size - a) > 0:  # fade in over the previous tile
            w = np.minimum(w, (t + 0.5) / ov)
        if i + 1 < len(starts) and (ov := a + size - starts[i + 1]) > 0:  # fade out
            w = np.minimum(w, (size - t - 0.5) / ov)
        raw.append(w)
    total = np.zeros(length)
    for a, w in zip(starts, raw, strict=True):
        total[a : a + size] += w
    return [(w / total[a : a + size]).astype(np.float32) for a, w in zip(starts, raw, strict=True)]


class Blender:
    """Accumulates denoised cores into a float32 plane; the weights form a partition of unity."""

    def __init__(self, tiles: TilePlan) -> None:
        self.plan = tiles
        self.out = np.zeros((tiles.height, tiles.width), np.float32)
        self._rows = _weights(tiles.row_starts, tiles.tile_height, tiles.height)
        self._cols = _weights(tiles.col_starts, tiles.tile_width, tiles.width)

    def add(self, tile: Tile, denoised_window: np.ndarray) -> None:
        h = self.plan.halo
        core = denoised_window[h : h + tile.y1 - tile.y0, h : h + tile.x1 - tile.x0]
        weight = self._rows[tile.row][:, None] * self._cols[tile.col][None, :]
        self.out[tile.y0 : tile.y1, tile.x0 : tile.x1] += core * weight
