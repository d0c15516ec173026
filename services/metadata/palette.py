"""Pillow's median-cut palette (`Image.quantize(n, method=MEDIANCUT)`), the same values for a
tenth of the CPU.

The dominant colours stored for every image are Pillow's median cut over a ~128 px sample. Pillow
builds it through linked lists and a chained hash table (libImaging/Quant.c): ~7-10 ms per upload
for the ~10,000 distinct colours of a photo's sample, the largest single cost of indexing after
decoding. This module computes the same palette and pixel counts with numpy over the sample's
distinct colours, step for step as Quant.c's `quantize` (kmeans 0):

1. count each distinct colour (Quant.c keys its table by a 32-bit hash of the colour, which is
   injective over 24-bit RGB: the same groups);
2. split boxes of colours, the box holding most pixels first (Quant.c's binary heap, ported with
   its order for equal counts), along the axis of the widest luminance-weighted range (77/150/29),
   at the value where the box's pixel count, walked from the highest value down, passes half;
   a box of one colour is never split;
3. each box's palette colour is the rounded mean of its pixels, numbered in the tree's
   left-to-right order (higher values left);
4. each pixel goes to the nearest palette colour, its own box's colour on a tie, otherwise the
   first tied one in the order of distance from its box's colour (then index), as Quant.c's
   sorted distance tables give it.

tests/services/metadata/test_palette.py checks the result against Pillow's own quantize on
photos, flat pictures, noise and few-colour images, so a Pillow upgrade that changed its median
cut would fail there rather than change stored values silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

# Quant.c rescales colours past this many distinct ones; a sample never has that many pixels
# (pixels.colors samples at most ~255x255), and `median_cut` refuses rather than differ.
MAX_DISTINCT: Final = 65536
_AXIS_WEIGHTS: Final = (77, 150, 29)

Ints = npt.NDArray[np.int64]


@dataclass
class _Box:
    """Some of the distinct colours: their indices, channel values and pixel counts, each a
    1-D array of its own (numpy's reductions over rows of a 2-D array cost ~10x more)."""

    members: Ints
    channels: tuple[Ints, Ints, Ints]
    weights: Ints
    pixels: int = 0
    low: tuple[int, ...] = ()
    high: tuple[int, ...] = ()
    children: tuple[_Box, _Box] | None = field(default=None)

    def __post_init__(self) -> None:
        self.pixels = int(self.weights.sum())
        self.low = tuple(int(c.min()) for c in self.channels)
        self.high = tuple(int(c.max()) for c in self.channels)

    def volume(self) -> int:
        return math.prod(h - lo + 1 for h, lo in zip(self.high, self.low, strict=True))

    def part(self, mask: npt.NDArray[np.bool_]) -> _Box:
        r, g, b = (c[mask] for c in self.channels)
        return _Box(self.members[mask], (r, g, b), self.weights[mask])


class _Heap:
    """Quant.c's QuantHeap: a 1-based binary max-heap on the boxes' pixel counts. Ported as
    written, since which of two equal boxes is split first decides the palette."""

    def __init__(self) -> None:
        self._items: list[_Box | None] = [None]

    def add(self, box: _Box) -> None:
        self._items.append(box)
        k = len(self._items) - 1
        while k != 1:
            parent = self._items[k // 2]
            assert parent is not None
            if box.pixels - parent.pixels <= 0:
                break
            self._items[k] = parent
            k >>= 1
        self._items[k] = box

    def remove(self) -> _Box | None:
        items = self._items
        if len(items) == 1:
            return None
        top = items[1]
        last = items.pop()
        assert last is not None
        count = len(items) - 1
        if count == 0:
            return top
        k = 1
        while k * 2 <= count:
            child = k * 2
            a, b = items[child], items[child + 1] if child < count else None
            assert a is not None
            if b is not None and a.pixels - b.pixels < 0:
                child += 1
            chosen = items[child]
            assert chosen is not None
            if last.pixels - chosen.pixels > 0:
                break
            items[k] = chosen
            k = child
        items[k] = last
        return top


def median_cut(
    rgb: npt.NDArray[np.uint8], colors: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The palette (n, 3) and each entry's pixel count (n,) that
    `Image.fromarray(rgb).quantize(colors, method=Image.Quantize.MEDIANCUT)` gives for an
    (h, w, 3) uint8 array (n <= colors; an entry may count 0 pixels)."""
    flat = rgb.reshape(-1, 3)
    if not 1 <= colors <= 256 or not len(flat):
        raise ValueError("1..256 colours of a non-empty image")
    packed = (flat[:, 0].astype(np.uint32) << 16) | (flat[:, 1].astype(np.uint32) << 8) | flat[:, 2]
    distinct, counts = np.unique(packed, return_counts=True)
    if len(distinct) > MAX_DISTINCT:
        raise ValueError(f"more than {MAX_DISTINCT} distinct colours")
    channels = ((distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255)
    r, g, b = (c.astype(np.int64) for c in channels)
    counts = counts.astype(np.int64)

    root = _Box(np.arange(len(distinct)), (r, g, b), counts)
    heap = _Heap()
    heap.add(root)
    for _ in range(colors - 1):
        node = heap.remove()
        while node is not None and node.volume() == 1:
            node = heap.remove()
        if node is None:
            break
        node.children = _split(node)
        heap.add(node.children[0])
        heap.add(node.children[1])

    leaves = _leaves(root)
    label = np.empty(len(distinct), dtype=np.int64)
    for index, leaf in enumerate(leaves):
        label[leaf.members] = index
    n = len(leaves)
    in_box = np.bincount(label, weights=counts, minlength=n)
    sums = np.stack(
        [np.bincount(label, weights=channel * counts, minlength=n) for channel in root.channels]
    )
    # (int)(.5 + (double)sum / (double)count), as Quant.c rounds: (3, n).
    palette = (0.5 + sums / in_box).astype(np.int64)

    # Nearest palette colour per distinct colour, (n, k); its own box's colour on a tie.
    dist = sum(
        (channel[None, :] - centre[:, None]) ** 2
        for channel, centre in zip(root.channels, palette, strict=True)
    )
    nearest = dist.min(axis=0)
    chosen = label.copy()
    moved = np.flatnonzero(dist[label, np.arange(len(distinct))] != nearest)
    if len(moved):
        # Otherwise the first nearest one in the order of distance from the box's colour, then
        # index: the order of Quant.c's sorted distance tables.
        between = ((palette[:, :, None] - palette[:, None, :]) ** 2).sum(axis=0)
        order = between[label[moved]] * n + np.arange(n)[None, :]
        order[nearest[moved, None] != dist[:, moved].T] = np.iinfo(np.int64).max
        chosen[moved] = order.argmin(axis=1)
    return palette.T, np.bincount(chosen, weights=counts, minlength=n).astype(np.int64)


def _split(node: _Box) -> tuple[_Box, _Box]:
    # The first axis of the largest weighted range (Quant.c keeps the first on a tie).
    ranges = [(h - lo) * w for h, lo, w in zip(node.high, node.low, _AXIS_WEIGHTS, strict=True)]
    axis = ranges.index(max(ranges))
    values = node.channels[axis]
    # Walking the colours from the highest value down, the value at which the pixels passed
    # half of the box's; every colour of that value or above goes left.
    by_value = np.bincount(values, weights=node.weights, minlength=256)[::-1].cumsum()
    split_value = 255 - int(np.argmax(by_value * 2 > node.pixels))
    right = values < split_value
    if split_value == node.low[axis]:
        # The split value was the lowest: the lowest value alone goes right.
        right = values == split_value
    return node.part(~right), node.part(right)


def _leaves(root: _Box) -> list[_Box]:
    out: list[_Box] = []
    stack = [root]
    while stack:
        box = stack.pop()
        if box.children is None:
            out.append(box)
        else:
            stack.extend(reversed(box.children))
    return out
