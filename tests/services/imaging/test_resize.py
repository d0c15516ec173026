import pytest
from PIL import Image, ImageStat

from pixmesh.common.v1.operations_pb2 import Gravity, Resize
from services.imaging.errors import INVALID_OPERATION, OUTPUT_TOO_LARGE
from services.imaging.ops import Context, Size, resize
from services.runtime.errors import InvalidArgument

from .samples import BLUE, RED, close, colour_at, scene, validated

FIT, FILL, FORCE = Resize.FIT, Resize.FILL, Resize.FORCE
FILL_DOWN, AUTO = Resize.FILL_DOWN, Resize.AUTO
CTX = Context("operations[0].resize", max_output_dimension=4096)
SRC = Size(320, 240)


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (Resize(width=160), Size(160, 120)),
        (Resize(height=60), Size(80, 60)),
        (Resize(width=100, height=100), Size(100, 75)),
        (Resize(width=100, height=100, mode=FIT), Size(100, 75)),
        (Resize(width=1000, height=1000), SRC),  # no enlarge by default
        (Resize(width=1000, height=1000, enlarge=True), Size(1000, 750)),
        (Resize(width=100, height=100, mode=FILL), Size(100, 100)),
        (Resize(width=640, height=640, mode=FILL), SRC),  # not enlarged, nothing to crop
        (Resize(width=640, height=100, mode=FILL), Size(320, 100)),  # crops only the height
        (Resize(width=640, height=640, mode=FILL, enlarge=True), Size(640, 640)),
        (Resize(width=640, height=640, mode=FILL_DOWN), Size(240, 240)),  # box shrunk, aspect kept
        (Resize(width=100, height=50, mode=FILL_DOWN), Size(100, 50)),
        (Resize(width=100, height=50, mode=AUTO), Size(100, 50)),  # both landscape: fill
        (Resize(width=50, height=100, mode=AUTO), Size(50, 38)),  # orientations differ: fit
        (Resize(width=100, dpr=2), Size(200, 150)),
        (Resize(width=100, dpr=2.5, mode=FIT), Size(250, 188)),
        (Resize(width=200, dpr=2), SRC),  # the dpr does not enlarge either
        (Resize(width=100, min_height=150), Size(200, 150)),  # min wins over enlarge
        (Resize(width=100, min_width=120, min_height=60), Size(120, 90)),
        (Resize(width=300, max_height=100), Size(133, 100)),
        (Resize(width=100, min_width=200, max_width=150), Size(150, 113)),  # max wins over min
        (Resize(width=100, height=100, mode=FILL, min_width=150), Size(150, 150)),
        (Resize(width=50, height=50, mode=FORCE, max_width=25), Size(25, 25)),
        (Resize(width=20, max_width=15, dpr=2), Size(30, 23)),  # the dpr scales max too
        (Resize(width=50, height=200, mode=FORCE), Size(50, 200)),
        (Resize(width=500, height=100, mode=FORCE), Size(320, 100)),  # clamped per axis
        (Resize(width=500, height=100, mode=FORCE, enlarge=True), Size(500, 100)),
        (Resize(width=1), Size(1, 1)),  # never 0 pixels
        (Resize(width=3, height=1), Size(1, 1)),
    ],
)
def test_output_size_matches_the_plan(op: Resize, expected: Size) -> None:
    assert resize.validate(op, SRC, CTX) == expected
    out = resize.apply(scene(*(SRC.width, SRC.height)), op)
    assert Size.of(out) == expected


def test_sizes_round_half_up() -> None:
    # 333 * 100/200 = 166.5: Python's round() would give 166.
    assert resize.plan(Resize(width=100), Size(200, 333)).size == Size(100, 167)


def test_fill_crops_the_centre() -> None:
    img = Image.new("RGB", (300, 100), RED)
    img.paste(BLUE, (100, 0, 200, 100))  # a blue centre third
    out = resize.apply(img, Resize(width=50, height=50, mode=FILL))
    assert out.size == (50, 50)
    # Lanczos reads a little past the box edge (as it should): look one filter width in.
    assert close(colour_at(out, 3, 25), (*BLUE, 255), 8)
    assert close(colour_at(out, 46, 25), (*BLUE, 255), 8)


def test_force_stretches_the_whole_image() -> None:
    out = resize.apply(scene(), Resize(width=64, height=64, mode=FORCE))
    assert close(colour_at(out, 2, 2), (*RED, 255))


def test_same_size_returns_the_image_untouched() -> None:
    img = scene()
    assert resize.apply(img, Resize(width=320, height=240)) is img


def test_alpha_does_not_bleed_colour() -> None:
    # Transparent black next to opaque white: a non-premultiplied filter would darken the edge.
    img = Image.new("RGBA", (100, 10), (0, 0, 0, 0))
    img.paste((255, 255, 255, 255), (50, 0, 100, 10))
    out = resize.apply(img, Resize(width=10))
    r, g, b, a = colour_at(out, 5, 0)
    assert a > 0 and min(r, g, b) >= 250


def test_rescaled_source_is_planned_on_the_logical_size() -> None:
    # What the pipeline does after a JPEG draft: pixels at 1/4, plan on the full header size.
    logical = Size(1283, 962)
    small = scene(321, 241)
    op = Resize(width=200)
    out = resize.resize(small, op, logical, 0.25)
    assert Size.of(out) == resize.plan(op, logical).size == Size(200, 150)


def test_reduction() -> None:
    assert resize.plan(Resize(width=800), Size(4000, 3000)).reduction == pytest.approx(5)
    plan = resize.plan(Resize(width=100, height=100, mode=FILL), Size(4000, 3000))
    assert plan.reduction == pytest.approx(30)
    assert resize.plan(Resize(width=10, height=10), Size(5, 5)).reduction == 1


@pytest.mark.parametrize(
    ("op", "field", "reason"),
    [
        (Resize(), "operations[0].resize", INVALID_OPERATION),
        (Resize(width=10, mode=FILL), "operations[0].resize.mode", INVALID_OPERATION),
        (Resize(height=10, mode=FORCE), "operations[0].resize.mode", INVALID_OPERATION),
        (Resize(width=5000), "operations[0].resize.width", OUTPUT_TOO_LARGE),
        (Resize(width=10, height=5000), "operations[0].resize.height", OUTPUT_TOO_LARGE),
        (Resize(width=10, mode=99), "operations[0].resize.mode", INVALID_OPERATION),  # type: ignore[arg-type]
        (Resize(width=10, mode=AUTO), "operations[0].resize.mode", INVALID_OPERATION),
        (Resize(height=10, mode=FILL_DOWN), "operations[0].resize.mode", INVALID_OPERATION),
        (Resize(width=10, dpr=-1), "operations[0].resize.dpr", INVALID_OPERATION),
        (Resize(width=10, dpr=9), "operations[0].resize.dpr", INVALID_OPERATION),
        (Resize(width=2100, dpr=2), "operations[0].resize.width", OUTPUT_TOO_LARGE),
        (Resize(width=10, min_width=5000), "operations[0].resize.min_width", OUTPUT_TOO_LARGE),
        (
            Resize(width=10, gravity=Gravity(anchor=Gravity.NORTH)),
            "operations[0].resize.gravity",
            INVALID_OPERATION,
        ),
        (
            Resize(width=10, height=10, mode=FILL, gravity=Gravity(anchor=Gravity.NORTH, x=0.5)),
            "operations[0].resize.gravity.x",
            INVALID_OPERATION,
        ),
    ],
)
def test_invalid_parameters(op: Resize, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validated(resize.validate, op, SRC, CTX)
    assert err.value.reason == reason
    assert [v.field for v in err.value.violations] == [field]


def test_unknown_source_size() -> None:
    assert resize.validate(Resize(width=10), None, CTX) is None
    assert resize.validate(Resize(width=10, height=20, mode=FORCE, enlarge=True), None, CTX) == (
        Size(10, 20)
    )


def fill(anchor: Gravity.Anchor.ValueType, **focus: float) -> Resize:
    return Resize(width=80, height=240, mode=FILL, gravity=Gravity(anchor=anchor, **focus))


@pytest.mark.parametrize(
    ("op", "left"),
    [
        (fill(Gravity.CENTER), 120.0),
        (fill(Gravity.WEST), 0.0),
        (fill(Gravity.NORTH_EAST), 240.0),
        (fill(Gravity.FOCUS_POINT, x=0.9, y=0.1), 240.0),  # pushed back inside
        (fill(Gravity.FOCUS_POINT, x=0.25), 40.0),
    ],
)
def test_gravity_places_the_fill_box(op: Resize, left: float) -> None:
    p = resize.plan(op, SRC)
    assert p.size == Size(80, 240)
    assert p.box == (left, 0.0, left + 80, 240.0)


def test_smart_gravity_finds_the_detail() -> None:
    # A flat grey image with one busy, colourful patch on the right.
    img = Image.new("RGB", (400, 100), (128, 128, 128))
    for x in range(300, 360, 4):
        img.paste((255, 0, 0) if x % 8 else (0, 0, 255), (x, 20, x + 2, 80))
    op = Resize(width=100, height=100, mode=FILL, gravity=Gravity(anchor=Gravity.SMART))
    left = resize.plan(op, Size(400, 100), img).box[0]
    assert 255 <= left <= 300  # the window holds every stripe (300..358)
    out = resize.apply(img, op)
    assert ImageStat.Stat(out).stddev[0] > 40  # the stripes, not the grey
    # Without pixels (validation) the box is centred: the size does not depend on it.
    assert resize.plan(op, Size(400, 100)).box[0] == 150


def test_smart_gravity_is_refused_for_animations() -> None:
    op = Resize(width=10, height=10, mode=FILL, gravity=Gravity(anchor=Gravity.SMART))
    ctx = Context("operations[0].resize", 4096, frames=3)
    with pytest.raises(InvalidArgument) as err:
        validated(resize.validate, op, SRC, ctx)
    assert err.value.reason == "ANIMATION_UNSUPPORTED"
    assert err.value.violations[0].field == "operations[0].resize.gravity.anchor"
