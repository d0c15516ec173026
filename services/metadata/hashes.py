"""64-bit perceptual hashes (pHash, dHash), the same algorithms as the `imagehash` package.

Written with numpy alone: imagehash would bring scipy and PyWavelets for two small transforms.
Hashes are unsigned 64-bit integers, first bit most significant; two images are near-duplicates
when few bits differ (`distance`). The API shows them as 16 hex digits, Postgres keeps them as
signed bigints (`to_signed`).
"""

from __future__ import annotations

from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

HASH_BITS: Final = 64
_PHASH_SIZE: Final = 32  # the DCT input; its 8x8 lowest frequencies become the hash


def phash(image: Image.Image) -> int:
    """DCT hash: each bit says whether a low frequency is above the median of the 8x8 block.

    Scaling and JPEG recompression barely move low frequencies, so copies stay within a few bits.
    """
    size = _PHASH_SIZE
    grey = image.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    basis = _dct_basis(size)
    low = basis @ pixels @ basis.T  # 2-D DCT-II, first 8 rows and columns only
    return _pack(low > np.median(low))


def dhash(image: Image.Image) -> int:
    """Difference hash: each bit says whether a pixel of a 9x8 thumbnail is brighter than its
    left neighbour."""
    grey = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.int16)
    return _pack(pixels[:, 1:] > pixels[:, :-1])


def distance(a: int, b: int) -> int:
    """Hamming distance: the number of differing bits."""
    return (a ^ b).bit_count()


def to_hex(value: int) -> str:
    return f"{value:016x}"


def from_hex(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value < 1 << HASH_BITS or len(text) != 16:
        raise ValueError(f"not a 64-bit hash: {text!r}")
    return value


def to_signed(value: int) -> int:
    """The bigint Postgres stores for an unsigned 64-bit hash (two's complement)."""
    return value - (1 << HASH_BITS) if value >= 1 << (HASH_BITS - 1) else value


def to_unsigned(value: int) -> int:
    return value & ((1 << HASH_BITS) - 1)


@cache
def _dct_basis(size: int) -> npt.NDArray[np.float64]:
    # Rows k = 0..7 of the (unnormalised) DCT-II matrix: cos(pi * k * (2n + 1) / (2 * size)).
    k = np.arange(8)[:, None]
    n = np.arange(size)[None, :]
    return np.cos(np.pi * k * (2 * n + 1) / (2 * size))


def _pack(bits: npt.NDArray[np.bool_]) -> int:
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value
