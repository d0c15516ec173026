"""pHash and dHash: copies stay close, different pictures do not."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable

import pytest
from PIL import Image

from services.metadata import hashes

from .images import scene


def recompressed(image: Image.Image, size: tuple[int, int], quality: int) -> Image.Image:
    out = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


@pytest.mark.parametrize("hash_fn", [hashes.phash, hashes.dhash])
def test_resized_and_recompressed_copies_are_near(hash_fn: Callable[[Image.Image], int]) -> None:
    for seed in range(3):
        original = scene(seed)
        for size, quality in (((600, 450), 60), ((300, 225), 35), ((1024, 768), 90)):
            copy = recompressed(original, size, quality)
            assert hashes.distance(hash_fn(original), hash_fn(copy)) <= 4


def test_different_pictures_are_far_apart() -> None:
    values = [hashes.phash(scene(seed)) for seed in range(6)]

    distances = [hashes.distance(a, b) for a, b in itertools.combinations(values, 2)]

    assert min(distances) >= 14, distances


def test_hex_and_signed_forms_round_trip() -> None:
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x95515145EF14353F):
        text = hashes.to_hex(value)
        assert len(text) == 16
        assert hashes.from_hex(text) == value
        signed = hashes.to_signed(value)
        assert -(2**63) <= signed < 2**63
        assert hashes.to_unsigned(signed) == value


@pytest.mark.parametrize("text", ["", "abc", "1" * 17, "zz" * 8])
def test_from_hex_refuses_what_is_not_a_64_bit_hash(text: str) -> None:
    with pytest.raises(ValueError):
        hashes.from_hex(text)


def test_distance_counts_differing_bits() -> None:
    assert hashes.distance(0b1011, 0b0001) == 2
    assert hashes.distance(0, 2**64 - 1) == 64
