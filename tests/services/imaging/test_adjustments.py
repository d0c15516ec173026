"""Pixel operations that keep the size: blur, sharpen, pixelate, adjust, grayscale, duotone,
flatten, round corners."""

from typing import Any

import pytest
from PIL import Image, ImageStat

from pixmesh.common.v1.operations_pb2 import (
    Adjust,
    Blur,
    Duotone,
    Flatten,
    Grayscale,
    Pixelate,
    RoundCorners,
    Sharpen,
)
from services.imaging.ops import REGISTRY, Context, Size
from services.imaging.ops import round_corners as rc
from services.runtime.errors import InvalidArgument

from .samples import RED, close, colour_at, op_name, scene, validated

SRC = Size(320, 240)


def apply(op: Any, img: Image.Image) -> Image.Image:
    spec = REGISTRY[op_name(op)]
    ctx = Context(f"operations[0].{spec.name}", 4096)
    assert spec.validate(op, Size.of(img), ctx) == Size.of(img)
    out = spec.apply(img, op)
    assert out.size == img.size
    return out


def rejects(op: Any, field: str) -> None:
    name = op_name(op)
    path = f"operations[0].{name}"
    with pytest.raises(InvalidArgument) as err:
        validated(REGISTRY[name].validate, op, SRC, Context(path, 4096))
    assert err.value.violations[0].field == f"{path}.{field}".rstrip(".")


def edge_contrast(img: Image.Image) -> float:
    """Mean absolute difference across the red square's right edge (x = 80)."""
    grey = img.convert("L")
    return (
        sum(abs(int(grey.getpixel((81, y))) - int(grey.getpixel((79, y)))) for y in range(10, 50))
        / 40
    )  # type: ignore[arg-type]


def test_blur_softens_edges_and_keeps_transparent_colours_out() -> None:
    img = scene()
    assert edge_contrast(apply(Blur(sigma=4), img)) < edge_contrast(img) / 2
    # Transparent black beside opaque white: premultiplied blurring keeps the edge white.
    rgba = Image.new("RGBA", (40, 10), (0, 0, 0, 0))
    rgba.paste((255, 255, 255, 255), (20, 0, 40, 10))
    r, g, b, a = colour_at(apply(Blur(sigma=3), rgba), 19, 5)
    assert 0 < a < 255 and min(r, g, b) >= 250


def test_sharpen_increases_edge_contrast_and_leaves_alpha() -> None:
    soft = apply(Blur(sigma=2), scene())
    assert edge_contrast(apply(Sharpen(sigma=2, amount=2), soft)) > edge_contrast(soft) * 1.2
    rgba = scene(mode="RGBA")
    out = apply(Sharpen(), rgba)
    assert out.mode == "RGBA" and out.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()


def test_pixelate_makes_uniform_blocks() -> None:
    out = apply(Pixelate(size=16), scene())
    block = out.crop((160, 112, 176, 128))  # on the gradient
    assert len(block.getcolors() or []) == 1
    assert out.getpixel((160, 112)) != out.getpixel((176, 112))


def test_adjust() -> None:
    img = scene()
    mean = ImageStat.Stat(img.convert("L")).mean[0]
    assert ImageStat.Stat(apply(Adjust(brightness=30), img).convert("L")).mean[0] > mean + 20
    assert ImageStat.Stat(apply(Adjust(brightness=-100), img).convert("L")).mean[0] == 0
    flat = apply(Adjust(contrast=-100), img)
    assert ImageStat.Stat(flat).stddev[0] < 1
    grey = apply(Adjust(saturation=-100), img)
    r, g, b, _ = colour_at(grey, 5, 5)
    assert abs(r - g) <= 1 and abs(g - b) <= 1
    vivid = apply(Adjust(saturation=50), img)
    assert colour_at(vivid, 5, 5)[0] > colour_at(img, 5, 5)[0] - 1
    rgba = scene(mode="RGBA")
    assert (
        apply(Adjust(brightness=20), rgba).getchannel("A").tobytes()
        == rgba.getchannel("A").tobytes()
    )


def test_grayscale_keeps_alpha() -> None:
    assert apply(Grayscale(), scene()).mode == "L"
    assert apply(Grayscale(), scene(mode="RGBA")).mode == "LA"


def test_duotone_defaults_to_sepia_and_takes_colours() -> None:
    sepia = apply(Duotone(), scene())
    r, g, b, _ = colour_at(sepia, 160, 120)
    assert r > g > b  # warm brown
    two = apply(Duotone(shadow="#0000ff", highlight="#ffff00"), Image.new("L", (4, 4), 0))
    assert colour_at(two, 0, 0) == (0, 0, 255, 255)
    assert apply(Duotone(), scene(mode="RGBA")).mode == "RGBA"


def test_flatten() -> None:
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    out = apply(Flatten(background="#00ff00"), img)
    assert out.mode == "RGB" and colour_at(out, 5, 5) == (0, 255, 0, 255)
    assert apply(Flatten(), scene(mode="LA")).mode == "L"
    opaque = scene()
    assert apply(Flatten(), opaque) is opaque


def test_round_corners() -> None:
    out = apply(RoundCorners(radius=40), scene())
    assert out.mode == "RGBA"
    assert colour_at(out, 0, 0)[3] == 0 and colour_at(out, 319, 239)[3] == 0
    assert colour_at(out, 40, 40)[3] == 255 and colour_at(out, 160, 0)[3] == 255
    assert any(0 < colour_at(out, i, i)[3] < 255 for i in range(40))  # anti-aliased arc
    filled = apply(RoundCorners(radius=40, background="#0000ff"), scene())
    assert filled.mode == "RGB" and colour_at(filled, 0, 0) == (0, 0, 255, 255)
    assert close(colour_at(filled, 30, 30), (*RED, 255))
    # The radius is capped at half the shorter side: a circle, not an error.
    assert rc.corner_mask((20, 10), 1000).getpixel((10, 5)) == 255


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Blur(), "sigma"),
        (Blur(sigma=101), "sigma"),
        (Sharpen(sigma=11), "sigma"),
        (Sharpen(amount=-1), "amount"),
        (Sharpen(threshold=256), "threshold"),
        (Pixelate(size=1), "size"),
        (Pixelate(size=1025), "size"),
        (Adjust(), ""),
        (Adjust(contrast=101), "contrast"),
        (Duotone(shadow="red"), "shadow"),
        (Duotone(highlight="#ffffff80"), "highlight"),  # must be opaque
        (Flatten(background="#00000000"), "background"),
        (RoundCorners(), "radius"),
        (RoundCorners(radius=5, background="blue"), "background"),
    ],
)
def test_invalid_parameters(op: Any, field: str) -> None:
    rejects(op, field)
