"""BlurHash and ThumbHash against values computed by independent implementations (the PyPI
packages blurhash 1.1.5 and thumbhash-python 1.0.1) on the same pixels."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import numpy.typing as npt
import pytest

from services.metadata.placeholders import blurhash, thumbhash


def noise(seed: str, height: int, width: int, alpha: bool) -> npt.NDArray[np.uint8]:
    """Deterministic pixels that never change with library versions, and have no ties."""
    raw = hashlib.shake_256(seed.encode()).digest(height * width * 4)
    rgba = np.frombuffer(raw, np.uint8).reshape(height, width, 4).copy()
    if not alpha:
        rgba[..., 3] = 255
    return rgba


@pytest.mark.parametrize(
    ("seed", "size", "alpha", "expected_blurhash", "expected_thumbhash"),
    [
        ("landscape", (24, 32), False, "L6HoB[^|ze~D_7nCogw?9WX2FWRg", "4AcCFYJYjFiFapeAZbd3dmp/mW9Z"),
        ("portrait", (32, 24), True, "T4H2l{^N+ktVIUNrR5#TUDo,beIx", "3/eBDAAI8icmENirvQe5pzpQiHCF9mqiBw=="),
        ("square", (10, 10), False, "LIHCAn~B[A^,??IbESo[xmrsjpo}", "HwgGHwaqeg8rl6h5qIrGmWuX1P2k+4YF"),
    ],
)  # fmt: skip
def test_matches_reference_implementations(
    seed: str,
    size: tuple[int, int],
    alpha: bool,
    expected_blurhash: str,
    expected_thumbhash: str,
) -> None:
    rgba = noise(seed, *size, alpha)
    x, y = (4, 3) if size[1] >= size[0] else (3, 4)

    assert blurhash(rgba[..., :3], x, y) == expected_blurhash
    assert base64.b64encode(thumbhash(rgba)).decode() == expected_thumbhash


def test_blurhash_of_a_solid_colour_encodes_the_colour_and_flat_components() -> None:
    solid = np.full((8, 8, 3), (200, 100, 50), np.uint8)

    value = blurhash(solid, 4, 3)

    # 1 size char, 1 max-AC char, 4 DC chars, 2 chars per AC component.
    assert len(value) == 6 + 2 * (4 * 3 - 1)
    assert value == "LNM|T9}XfQ}X}XsofQsofQfQfQfQ"


def test_blurhash_rejects_impossible_component_counts() -> None:
    with pytest.raises(ValueError):
        blurhash(np.zeros((4, 4, 3), np.uint8), 10, 3)


def test_thumbhash_refuses_images_over_100_pixels() -> None:
    with pytest.raises(ValueError):
        thumbhash(np.zeros((101, 10, 4), np.uint8))


def test_thumbhash_flags_alpha_only_when_there_is_transparency() -> None:
    opaque = thumbhash(noise("a", 16, 16, alpha=False))
    transparent = thumbhash(noise("a", 16, 16, alpha=True))

    assert not opaque[2] & 0x80  # bit 23 of the header
    assert transparent[2] & 0x80
    assert len(transparent) > len(opaque)
