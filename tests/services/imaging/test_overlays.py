"""Watermarks (image and text) and redaction."""

from functools import cache
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pixmesh.common.v1.operations_pb2 import Gravity, Redact, Region, Watermark, WatermarkText
from services.imaging.errors import IMAGE_CORRUPT
from services.imaging.ops import REGISTRY, Context, Size, redact, watermark, watermark_text
from services.runtime.errors import InvalidArgument

from .samples import RED, close, colour_at, encode, op_name, scene, validated

SRC = Size(320, 240)
CTX = Context("operations[0].x", 4096)


@cache
def logo() -> bytes:
    """A 40x20 watermark: opaque blue with a transparent right half."""
    img = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    img.paste((0, 0, 255, 255), (0, 0, 20, 20))
    return encode(img, "PNG")


def rejects(op: Any, field: str) -> str:
    path = f"operations[0].{op_name(op)}"
    with pytest.raises(InvalidArgument) as err:
        validated(REGISTRY[op_name(op)].validate, op, SRC, Context(path, 4096))
    assert err.value.violations[0].field == f"{path}.{field}".rstrip(".")
    return err.value.reason


def test_watermark_position_margin_and_alpha() -> None:
    op = Watermark(image=logo(), position=Gravity(anchor=Gravity.SOUTH_EAST), margin=10)
    assert watermark.validate(op, SRC, CTX) == SRC
    out = watermark.apply(scene(), op)
    assert out.mode == "RGB" and out.size == (320, 240)
    assert colour_at(out, 320 - 10 - 40 + 5, 240 - 10 - 5) == (0, 0, 255, 255)  # opaque half
    assert colour_at(out, 320 - 10 - 5, 240 - 10 - 5) == colour_at(scene(), 305, 225)  # clear half


def test_watermark_opacity_scale_and_tiles() -> None:
    faded = watermark.apply(scene(), Watermark(image=logo(), opacity=0.5))
    r, _, b, _ = colour_at(faded, 150, 120)  # centre: half blue over the scene
    assert 60 < b < 250 and r < colour_at(scene(), 150, 120)[0]
    scaled = watermark.apply(
        scene(), Watermark(image=logo(), scale=0.5, position=Gravity(anchor=Gravity.NORTH_WEST))
    )
    assert colour_at(scaled, 75, 35) == (0, 0, 255, 255)  # 160x80: the blue half is 80 wide
    tiled = watermark.apply(scene(), Watermark(image=logo(), tile=True, margin=10))
    # Tiles every 50 px across and 30 px down, from the top-left.
    for x, y in ((5, 5), (55, 35), (305, 215)):
        assert colour_at(tiled, x, y) == (0, 0, 255, 255), (x, y)
    assert colour_at(tiled, 45, 5) != (0, 0, 255, 255)


def test_watermark_keeps_alpha_of_the_image() -> None:
    out = watermark.apply(scene(mode="RGBA"), Watermark(image=logo()))
    assert out.mode == "RGBA"


def test_watermark_text() -> None:
    op = WatermarkText(
        text="pixmesh", size=40, color="#ff0000", position=Gravity(anchor=Gravity.NORTH)
    )
    out = np.asarray(watermark_text.apply(Image.new("RGB", (320, 240), (255, 255, 255)), op))
    red = (out == (255, 0, 0)).all(axis=2)
    columns, rows = np.flatnonzero(red.any(axis=0)), np.flatnonzero(red.any(axis=1))
    assert columns.min() > 60 and columns.max() < 260  # centred...
    assert rows.max() < 60  # ... near the top
    outlined = np.asarray(
        watermark_text.render(WatermarkText(text="A", outline_color="#000000"), 40)
    )
    assert ((outlined == (0, 0, 0, 255)).all(axis=2)).any()


def test_watermark_text_tiles_and_fades() -> None:
    op = WatermarkText(text="x", size=20, color="#000000", tile=True, opacity=0.5)
    out = np.asarray(watermark_text.apply(Image.new("RGB", (200, 200), (255, 255, 255)), op))
    inked = out[..., 0][out[..., 0] < 255]
    assert inked.size > 200 and inked.min() >= 120  # many glyphs, half opaque


def test_redact_blur_and_pixelate() -> None:
    region = Region(x=0, y=0, width=100, height=80)  # over the red square's corner
    blurred = redact.apply(scene(), Redact(regions=[region], strength=8))
    assert not close(colour_at(blurred, 79, 30), colour_at(scene(), 79, 30), 10)
    assert colour_at(blurred, 200, 200) == colour_at(scene(), 200, 200)  # outside untouched
    pixelated = redact.apply(scene(), Redact(regions=[region], method=Redact.PIXELATE))
    assert len(pixelated.crop((64, 0, 80, 16)).getcolors() or []) == 1
    assert close(colour_at(pixelated, 5, 5), (*RED, 255))


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Watermark(), "image"),
        (Watermark(image=logo(), scale=2), "scale"),
        (Watermark(image=logo(), opacity=0), "opacity"),
        (Watermark(image=logo(), tile=True, position=Gravity(anchor=Gravity.NORTH)), "position"),
        (Watermark(image=logo(), position=Gravity(anchor=Gravity.SMART)), "position.anchor"),
        (WatermarkText(), "text"),
        (WatermarkText(text="a\tb"), "text"),
        (WatermarkText(text="x" * 257), "text"),
        (WatermarkText(text="a", size=5), "size"),
        (WatermarkText(text="a", color="#zzzzzz"), "color"),
        (Redact(), "regions"),
        (Redact(regions=[Region(x=300, width=30, height=10)]), "regions[0]"),
        (Redact(regions=[Region(width=0, height=10)]), "regions[0].width"),
        (Redact(regions=[Region(width=1, height=1)], strength=300), "strength"),
    ],
)
def test_invalid_parameters(op: Any, field: str) -> None:
    rejects(op, field)


def test_watermark_image_must_be_a_small_valid_image() -> None:
    assert rejects(Watermark(image=b"\x89PNG\r\n\x1a\nbroken"), "image") == IMAGE_CORRUPT
    assert rejects(Watermark(image=b"hello"), "image") == "UNSUPPORTED_FORMAT"
    big = encode(Image.effect_noise((400, 400), 64).convert("RGB"), "PNG")
    assert len(big) > watermark.MAX_BYTES
    assert rejects(Watermark(image=big), "image") == "IMAGE_TOO_LARGE"
    huge = encode(Image.new("L", (2100, 2000)), "PNG")
    assert rejects(Watermark(image=huge), "image") == "TOO_MANY_PIXELS"
