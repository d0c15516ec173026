"""The pixel summary's shortcuts give the values of the long way round."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.metadata import pixels
from services.metadata.extract import _OPEN

from .images import scene


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_opaque_image_summarises_as_its_fully_opaque_rgba_copy(seed: int) -> None:
    # RGB skips the RGBA copy and the compositing onto white; RGBA with alpha 255 takes them.
    picture = scene(seed, (300 + 40 * seed, 200))

    opaque = pixels.summarize(_png(picture), _OPEN)
    with_alpha = pixels.summarize(_png(picture.convert("RGBA")), _OPEN)

    assert opaque == with_alpha


def test_a_transparent_image_is_summarised_with_its_alpha() -> None:
    picture = scene(4, (300, 200)).convert("RGBA")
    picture.putalpha(Image.new("L", picture.size, 0))
    picture.paste((0, 0, 0, 255), (0, 0, 150, 200))

    summary = pixels.summarize(_png(picture), _OPEN)

    # Half black, half transparent: white where transparent for colours, alpha kept for ThumbHash.
    assert summary.colors.average == "#808080"
    assert summary.placeholders.thumbhash[2] & 0x80
