import pytest

from pixmesh.common.v1.operations_pb2 import Crop
from services.imaging.errors import INVALID_OPERATION
from services.imaging.ops import Context, Size, crop
from services.runtime.errors import InvalidArgument

from .samples import BLUE, RED, close, colour_at, scene, validated

CTX = Context("operations[1].crop", max_output_dimension=4096)


def test_crop_cuts_the_rectangle() -> None:
    op = Crop(x=240, y=150, width=80, height=60)  # the bottom-right quarter holds the blue disc
    assert crop.validate(op, Size(320, 240), CTX) == Size(80, 60)
    out = crop.apply(scene(), op)
    assert out.size == (80, 60)
    assert close(colour_at(out, 40, 30), (*BLUE, 255))
    assert not close(colour_at(out, 0, 0), (*RED, 255))


def test_crop_of_the_whole_image_is_allowed() -> None:
    assert crop.validate(Crop(width=320, height=240), Size(320, 240), CTX) == Size(320, 240)


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Crop(x=0, y=0, width=0, height=10), "operations[1].crop.width"),
        (Crop(x=0, y=0, width=10, height=0), "operations[1].crop.height"),
        (Crop(x=300, y=0, width=21, height=10), "operations[1].crop.width"),
        (Crop(x=0, y=231, width=10, height=10), "operations[1].crop.height"),
    ],
)
def test_crop_outside_the_image_is_rejected(op: Crop, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validated(crop.validate, op, Size(320, 240), CTX)
    assert err.value.reason == INVALID_OPERATION
    assert err.value.violations[0].field == field


def test_unknown_size_checks_parameters_only() -> None:
    assert crop.validate(Crop(x=10_000, width=5, height=5), None, CTX) == Size(5, 5)
