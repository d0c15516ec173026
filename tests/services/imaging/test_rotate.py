import math

import pytest
from PIL import Image

from pixmesh.common.v1.operations_pb2 import Rotate
from services.imaging.errors import INVALID_OPERATION
from services.imaging.ops import Context, Size, rotate
from services.runtime.errors import InvalidArgument

from .samples import RED, close, colour_at, scene, validated

CTX = Context("operations[0].rotate", max_output_dimension=4096)


@pytest.mark.parametrize(
    ("angle", "corner"),
    [
        (90, (235, 5)),  # clockwise: the top-left square goes top-right
        (-270, (235, 5)),
        (180, (315, 235)),
        (270, (5, 315)),
        (-90, (5, 315)),
        (360, (5, 5)),
        (0, (5, 5)),
    ],
)
def test_quarter_turns_are_lossless_transposes(angle: float, corner: tuple[int, int]) -> None:
    img = scene()
    out = rotate.apply(img, Rotate(angle=angle))
    expected = (240, 320) if angle % 180 else (320, 240)
    assert out.size == expected
    assert rotate.validate(Rotate(angle=angle), Size(320, 240), CTX) == Size(*expected)
    assert colour_at(out, *corner) == (*RED, 255)  # exact: no resampling happened


@pytest.mark.parametrize("angle", [1, 30, 45, 89.5, 135, -30, 200, 359.9, 0.001])
@pytest.mark.parametrize("size", [(320, 240), (17, 5), (1, 1)])
def test_predicted_size_is_pillows(angle: float, size: tuple[int, int]) -> None:
    predicted = rotate.validate(Rotate(angle=angle), Size(*size), CTX)
    out = rotate.apply(Image.new("RGB", size), Rotate(angle=angle))
    assert predicted == Size(*out.size)


def test_default_background_is_white_for_opaque_images() -> None:
    out = rotate.apply(scene(), Rotate(angle=30))
    assert out.mode == "RGB"
    assert colour_at(out, 0, 0) == (255, 255, 255, 255)


def test_default_background_is_transparent_when_the_image_has_alpha() -> None:
    out = rotate.apply(scene(mode="RGBA"), Rotate(angle=30))
    assert out.mode == "RGBA"
    assert colour_at(out, 0, 0)[3] == 0


def test_translucent_background_adds_alpha_with_the_exact_colour() -> None:
    out = rotate.apply(scene(), Rotate(angle=30, background="#643200C0"))
    assert out.mode == "RGBA"
    assert colour_at(out, 0, 0) == (100, 50, 0, 192)


def test_opaque_background() -> None:
    out = rotate.apply(scene(), Rotate(angle=-45, background="#336699"))
    assert out.mode == "RGB"
    assert colour_at(out, 0, 0) == (0x33, 0x66, 0x99, 255)
    # The centre of the image is still the image, not background.
    cx, cy = out.width // 2, out.height // 2
    assert not close(colour_at(out, cx, cy), (0x33, 0x66, 0x99, 255), 5)


def test_grey_stays_grey_unless_the_background_has_colour() -> None:
    grey = scene().convert("L")
    assert rotate.apply(grey, Rotate(angle=10)).mode == "L"
    assert rotate.apply(grey, Rotate(angle=10, background="#ff0000")).mode == "RGB"


def test_parse_colour() -> None:
    assert rotate.parse_colour("") is None
    assert rotate.parse_colour("#FF8000") == (255, 128, 0, 255)
    assert rotate.parse_colour("#ff800080") == (255, 128, 0, 128)
    for bad in ("ff8000", "#ff80", "#ff800", "#gg8000", "red", "#ff8000 "):
        with pytest.raises(ValueError):
            rotate.parse_colour(bad)


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Rotate(angle=361), "operations[0].rotate.angle"),
        (Rotate(angle=-400), "operations[0].rotate.angle"),
        (Rotate(angle=math.nan), "operations[0].rotate.angle"),
        (Rotate(angle=math.inf), "operations[0].rotate.angle"),
        (Rotate(angle=10, background="blue"), "operations[0].rotate.background"),
    ],
)
def test_invalid_parameters(op: Rotate, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validated(rotate.validate, op, Size(10, 10), CTX)
    assert err.value.reason == INVALID_OPERATION
    assert err.value.violations[0].field == field
