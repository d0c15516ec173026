"""Resize's box-filter pre-shrink (REDUCING_GAP) stays visually identical to plain Lanczos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixmesh.common.v1.operations_pb2 import Resize
from services.imaging.ops import resize


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """Photo-like 2400x1800: smooth gradients, edges and sensor-like grain (what the box filter
    could alias)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:1800, 0:2400].astype(np.float64)
    base = np.stack(
        [
            128 + 100 * np.sin(x / 90.0) * np.cos(y / 70.0),
            128 + 90 * np.sin((x + y) / 45.0),
            (x / 2400 * 255) * ((y // 150) % 2) + 40,
        ],
        axis=-1,
    )
    base[600:1200, 800:1600] = [240, 30, 30]  # hard edges
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("width", [960, 600, 480, 300, 180])  # 2.5x .. 13.3x
def test_close_to_plain_lanczos(photo: Image.Image, width: int) -> None:
    # Measured with REDUCING_GAP 2.0: at most 7 of 255 (next to the hard edges, at 8x), 0.2-0.4
    # on average. A gap of 1.0 (box filter nearly all the way) gives 10-25 and 0.6-0.9.
    ours = resize.resize(photo, Resize(width=width))
    plain = photo.resize(ours.size, Image.Resampling.LANCZOS)
    diff = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(plain, dtype=np.int16))
    assert diff.max() <= 8, diff.max()
    assert diff.mean() <= 0.45, diff.mean()


def test_pre_shrinks_big_reductions(photo: Image.Image) -> None:
    # 5x: the box filter runs (2x), so the result is not plain Lanczos bit for bit.
    ours = resize.resize(photo, Resize(width=480))
    plain = photo.resize(ours.size, Image.Resampling.LANCZOS)
    assert resize.REDUCING_GAP <= 2.5
    assert np.asarray(ours).tobytes() != np.asarray(plain).tobytes()
