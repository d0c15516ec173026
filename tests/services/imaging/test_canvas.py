"""Operations that change the canvas: trim, pad, extend."""

from typing import Any

import pytest
from PIL import Image

from pixmesh.common.v1.operations_pb2 import Extend, Gravity, Pad, Trim
from services.imaging.errors import ANIMATION_UNSUPPORTED
from services.imaging.ops import REGISTRY, Context, Size, extend, trim
from services.runtime.errors import InvalidArgument

from .samples import RED, close, colour_at, op_name, scene, validated

CTX = Context("operations[0].x", 4096)


def bordered(border: tuple[int, ...] = (255, 255, 255), mode: str = "RGB") -> Image.Image:
    """A 100x60 image: a 40x20 red block at (30, 10) on a plain border."""
    img = Image.new(mode, (100, 60), border)
    img.paste(RED + (255,) * (mode == "RGBA"), (30, 10, 70, 30))
    return img


SRC = Size(100, 60)


def rejects(op: Any, field: str, src: Size | None = SRC, frames: int = 1) -> str:
    path = f"operations[0].{op_name(op)}"
    with pytest.raises(InvalidArgument) as err:
        validated(REGISTRY[op_name(op)].validate, op, src, Context(path, 4096, frames))
    assert err.value.violations[0].field == f"{path}.{field}".rstrip(".")
    return err.value.reason


def test_trim_cuts_the_border() -> None:
    out = trim.apply(bordered(), Trim())
    assert out.size == (40, 20) and colour_at(out, 0, 0) == (*RED, 255)
    assert trim.validate(Trim(), Size(100, 60), CTX) is None  # depends on the pixels


def test_trim_threshold_and_colour() -> None:
    img = bordered()
    img.paste((250, 250, 250), (0, 0, 100, 5))  # a faint band along the top
    assert trim.apply(img, Trim()).size == (100, 55)  # the band is the border, white is not
    assert trim.apply(img, Trim(threshold=10)).size == (40, 20)
    # An explicit colour: only the red block's colour is border, so nothing to trim.
    assert trim.apply(bordered(), Trim(color="#dc1e1e")).size == (100, 60)


def test_trim_transparent_border_and_equal_sides() -> None:
    img = bordered((0, 0, 0, 0), "RGBA")
    assert trim.apply(img, Trim()).size == (40, 20)
    both = trim.apply(img, Trim(equal_horizontal=True, equal_vertical=True))
    assert both.size == (40, 40)  # 30 off both sides; 10 off top and bottom (the smaller)


def test_trim_leaves_a_plain_image_alone() -> None:
    img = Image.new("RGB", (10, 10), (9, 9, 9))
    assert trim.apply(img, Trim()) is img


def test_trim_refuses_animations() -> None:
    assert rejects(Trim(), "", frames=3) == ANIMATION_UNSUPPORTED


def test_pad() -> None:
    spec = REGISTRY["pad"]
    op = Pad(top=5, right=6, bottom=7, left=8, background="#0000ff")
    assert spec.validate(op, Size(320, 240), CTX) == Size(334, 252)
    out = spec.apply(scene(), op)
    assert out.size == (334, 252) and out.mode == "RGB"
    assert colour_at(out, 0, 0) == (0, 0, 255, 255) and close(colour_at(out, 10, 8), (*RED, 255))
    # Defaults: white, or transparent when the image has alpha; translucent colours add alpha.
    assert colour_at(spec.apply(scene(), Pad(top=2)), 5, 0) == (255, 255, 255, 255)
    assert colour_at(spec.apply(scene(mode="RGBA"), Pad(top=2)), 5, 0)[3] == 0
    assert spec.apply(scene(), Pad(top=2, background="#ff000080")).mode == "RGBA"
    assert spec.apply(scene(mode="L"), Pad(top=2, background="#808080")).mode == "L"


@pytest.mark.parametrize(
    ("op", "size"),
    [
        (Extend(width=400), Size(400, 240)),
        (Extend(width=100, height=300), Size(320, 300)),  # never shrinks
        (Extend(aspect_ratio=1), Size(320, 320)),
        (Extend(aspect_ratio=2), Size(480, 240)),
        (Extend(width=400, aspect_ratio=1), Size(400, 400)),
    ],
)
def test_extend_sizes(op: Extend, size: Size) -> None:
    assert extend.validate(op, Size(320, 240), CTX) == size
    assert Size.of(extend.apply(scene(), op)) == size


def test_extend_places_the_image_by_gravity() -> None:
    op = Extend(width=400, height=300, gravity=Gravity(anchor=Gravity.SOUTH_EAST))
    out = extend.apply(scene(), op)
    assert colour_at(out, 0, 0) == (255, 255, 255, 255)
    assert close(colour_at(out, 85, 65), (*RED, 255))
    centred = extend.apply(scene(), Extend(width=400, height=300))
    assert close(colour_at(centred, 45, 35), (*RED, 255))


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Pad(), ""),
        (Pad(top=5000), "top"),
        (Pad(top=1, background="#12"), "background"),
        (Extend(), ""),
        (Extend(width=9000), "width"),
        (Extend(aspect_ratio=200), "aspect_ratio"),
        (Extend(width=10, gravity=Gravity(anchor=Gravity.SMART)), "gravity.anchor"),
        (Extend(width=10, gravity=Gravity(anchor=Gravity.FOCUS_POINT)), "gravity.anchor"),
    ],
)
def test_invalid_parameters(op: Any, field: str) -> None:
    rejects(op, field)
