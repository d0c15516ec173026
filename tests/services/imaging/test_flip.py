import pytest

from pixmesh.common.v1.operations_pb2 import Flip
from services.imaging.ops import Context, Size, flip
from services.runtime.errors import InvalidArgument

from .samples import GREEN, RED, close, colour_at, scene, validated

CTX = Context("operations[0].flip", max_output_dimension=4096)


@pytest.mark.parametrize("axis", [Flip.HORIZONTAL, Flip.AXIS_UNSPECIFIED])
def test_horizontal_moves_left_to_right(axis: Flip.Axis.ValueType) -> None:
    out = flip.apply(scene(), Flip(axis=axis))
    assert out.size == (320, 240)
    assert close(colour_at(out, 315, 5), (*RED, 255))
    assert not close(colour_at(out, 5, 5), (*RED, 255))


def test_vertical_moves_top_to_bottom() -> None:
    out = flip.apply(scene(), Flip(axis=Flip.VERTICAL))
    assert close(colour_at(out, 5, 235), (*RED, 255))
    assert close(colour_at(out, 160, 2), (*GREEN, 255))


def test_flip_keeps_the_size_and_rejects_unknown_axes() -> None:
    assert flip.validate(Flip(), Size(3, 4), CTX) == Size(3, 4)
    with pytest.raises(InvalidArgument) as err:
        validated(flip.validate, Flip(axis=7), Size(3, 4), CTX)  # type: ignore[arg-type]
    assert err.value.violations[0].field == "operations[0].flip.axis"
