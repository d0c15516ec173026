"""Gravity placement, and crops that use it (relative sizes, compass, focus point, smart)."""

import pytest
from PIL import Image

from pixmesh.common.v1.operations_pb2 import Crop, Gravity
from services.imaging.ops import Context, Size, crop, gravity
from services.runtime.errors import InvalidArgument

from .samples import BLUE, RED, close, colour_at, scene, validated

CTX = Context("operations[0].crop", 4096)
G = Gravity


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        (G.ANCHOR_UNSPECIFIED, (40.0, 30.0)),
        (G.CENTER, (40.0, 30.0)),
        (G.NORTH, (40.0, 0.0)),
        (G.NORTH_EAST, (80.0, 0.0)),
        (G.EAST, (80.0, 30.0)),
        (G.SOUTH_EAST, (80.0, 60.0)),
        (G.SOUTH, (40.0, 60.0)),
        (G.SOUTH_WEST, (0.0, 60.0)),
        (G.WEST, (0.0, 30.0)),
        (G.NORTH_WEST, (0.0, 0.0)),
    ],
)
def test_compass_points(anchor: G.Anchor.ValueType, expected: tuple[float, float]) -> None:
    assert gravity.place(G(anchor=anchor), (100, 80), (20, 20)) == expected


def test_focus_point_is_centred_then_clamped() -> None:
    focus = G(anchor=G.FOCUS_POINT, x=0.5, y=0.25)
    assert gravity.place(focus, (100, 80), (20, 20)) == (40.0, 10.0)
    corner = G(anchor=G.FOCUS_POINT, x=1.0, y=0.0)
    assert gravity.place(corner, (100, 80), (20, 20)) == (80.0, 0.0)


def test_smart_prefers_detail_and_centres_ties() -> None:
    flat = Image.new("RGB", (200, 100), (90, 90, 90))
    assert gravity.smart(flat, 0.25, 1.0) == pytest.approx((0.5, 0.5), abs=0.02)
    busy = flat.copy()
    busy.paste((255, 0, 0), (10, 40, 30, 60))  # a saturated patch near the left edge
    x, _ = gravity.smart(busy, 0.25, 1.0)
    assert x < 0.2


def test_relative_crop() -> None:
    op = Crop(width_ratio=0.5, height_ratio=0.25)
    assert crop.validate(op, Size(320, 240), CTX) == Size(160, 60)
    assert crop.validate(op, None, CTX) is None
    out = crop.apply(scene(), op)
    assert out.size == (160, 60) and close(colour_at(out, 5, 5), (*RED, 255))


def test_crop_by_gravity() -> None:
    op = Crop(width=80, height=60, gravity=G(anchor=G.SOUTH_EAST))
    out = crop.apply(scene(), op)
    assert out.size == (80, 60) and close(colour_at(out, 40, 30), (*BLUE, 255))
    smart = crop.apply(scene(), Crop(width_ratio=0.3, height_ratio=0.3, gravity=G(anchor=G.SMART)))
    assert smart.size == (96, 72)


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Crop(width=10, width_ratio=0.5, height=10), "operations[0].crop.width_ratio"),
        (Crop(height=10), "operations[0].crop.width"),
        (Crop(width_ratio=1.5, height=10), "operations[0].crop.width_ratio"),
        (Crop(x=5, width=10, height=10, gravity=G()), "operations[0].crop.gravity"),
        (Crop(width=10, height=10, gravity=G(anchor=99)), "operations[0].crop.gravity.anchor"),  # type: ignore[arg-type]
        (
            Crop(width=10, height=10, gravity=G(anchor=G.FOCUS_POINT, x=2)),
            "operations[0].crop.gravity.x",
        ),
    ],
)
def test_invalid_crops(op: Crop, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validated(crop.validate, op, Size(320, 240), CTX)
    assert err.value.violations[0].field == field
