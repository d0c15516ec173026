"""Animated GIF/WebP/APNG stay animated through the pipeline; nothing is flattened silently."""

import io

import pytest
from PIL import Image

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import (
    Blur,
    Convert,
    Crop,
    Frames,
    Gravity,
    Pad,
    Resize,
    Rotate,
    Trim,
)
from services.imaging.errors import ANIMATION_UNSUPPORTED, OUTPUT_TOO_LARGE
from services.imaging.limits import Limits
from services.imaging.ops import Context, Size, frames
from services.imaging.pipeline import run
from services.runtime.errors import InvalidArgument

from .samples import RED, animation, close, colour_at, frames_of, moving_square, ops, square_x

LIMITS = Limits()


def durations_of(data: bytes) -> list[int]:
    img = Image.open(io.BytesIO(data))
    out = []
    for index in range(getattr(img, "n_frames", 1)):
        img.seek(index)
        img.load()
        out.append(int(img.info.get("duration", 0)))
    return out


def red_x(frame: Image.Image, y: int) -> int:
    """The leftmost column where row `y` is red."""
    return next(x for x in range(frame.width) if close(colour_at(frame, x, y), (*RED, 255), 40))


@pytest.mark.parametrize(("fmt", "expected"), [("GIF", image_pb2.GIF), ("WEBP", image_pb2.WEBP)])
def test_animation_stays_animated_through_geometry(
    fmt: str, expected: image_pb2.ImageFormat.ValueType
) -> None:
    data = animation(moving_square(4), fmt, durations=[50, 100, 150, 200])
    result = run(
        data, ops(Resize(width=32), Rotate(angle=180), Blur(sigma=0.5)), limits=LIMITS
    ).image
    assert (result.format, result.frames, result.width, result.height) == (expected, 4, 32, 24)
    assert not result.flattened
    out = frames_of(result.data)
    assert len(out) == 4 and all(f.size == (32, 24) for f in out)
    assert durations_of(result.data) == [50, 100, 150, 200]
    # Rotated 180°: the square moves left, one step per frame.
    positions = [red_x(f, 12) for f in out]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == 4


def test_gif_to_webp_and_apng() -> None:
    data = animation(moving_square(3))
    for target in (image_pb2.WEBP, image_pb2.PNG):
        result = run(data, ops(Convert(format=target)), limits=LIMITS).image
        assert result.frames == 3 and len(frames_of(result.data)) == 3


def test_loop_count_is_kept() -> None:
    data = animation(moving_square(3))
    data_once = io.BytesIO()
    squares = moving_square(3)
    squares[0].save(data_once, "GIF", save_all=True, append_images=squares[1:], duration=80)
    assert Image.open(io.BytesIO(run(data, [], limits=LIMITS).image.data)).info.get("loop") == 0
    once = Image.open(io.BytesIO(run(data_once.getvalue(), [], limits=LIMITS).image.data))
    assert "loop" not in once.info


def test_transparent_gif_frames_do_not_smear() -> None:
    frames = []
    for i in range(3):
        frame = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
        frame.paste((255, 0, 0, 255), (i * 12, 0, i * 12 + 10, 20))
        frames.append(frame)
    result = run(animation(frames, disposal=2), ops(Pad(left=4, right=4)), limits=LIMITS).image
    out = frames_of(result.data)
    assert colour_at(out[2], 4 + 2, 10)[3] == 0  # frame 0's square is gone in frame 2
    assert colour_at(out[2], 4 + 26, 10) == (255, 0, 0, 255)


def test_a_format_that_cannot_animate_is_refused() -> None:
    data = animation(moving_square(3))
    with pytest.raises(InvalidArgument) as err:
        run(data, ops(Resize(width=10), Convert(format=image_pb2.JPEG)), limits=LIMITS)
    assert err.value.reason == ANIMATION_UNSUPPORTED
    assert err.value.violations[0].field == "operations[1].convert.format"
    assert '{"frames": {"count": 1}}' in err.value.message


def test_a_default_format_that_cannot_animate_keeps_the_source_format() -> None:
    data = animation(moving_square(3))
    result = run(data, [], limits=LIMITS, default_format=image_pb2.JPEG).image
    assert result.format == image_pb2.GIF and result.frames == 3


def test_frames_picks_a_still() -> None:
    data = animation(moving_square(4))
    result = run(
        data, ops(Frames(start=2, count=1), Convert(format=image_pb2.JPEG)), limits=LIMITS
    ).image
    assert result.frames == 1 and result.format == image_pb2.JPEG and not result.flattened
    assert red_x(Image.open(io.BytesIO(result.data)), 17) == square_x(2, 4)


def test_frames_caps_the_count() -> None:
    data = animation(moving_square(5), durations=[10, 20, 30, 40, 50])
    result = run(data, ops(Frames(start=1, count=3)), limits=LIMITS).image
    assert result.frames == 3 and durations_of(result.data) == [20, 30, 40]


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Trim(), "operations[0].trim"),
        (
            Crop(width=10, height=10, gravity=Gravity(anchor=Gravity.SMART)),
            "operations[0].crop.gravity.anchor",
        ),
    ],
)
def test_operations_that_cannot_animate_are_refused(op: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        run(animation(moving_square(3)), ops(op), limits=LIMITS)
    assert err.value.reason == ANIMATION_UNSUPPORTED
    assert err.value.violations[0].field == field
    # ... and allowed once the animation is a still.
    run(animation(moving_square(3)), ops(Frames(count=1), op), limits=LIMITS)


def test_growth_counts_every_frame() -> None:
    data = animation(moving_square(10))  # 10 frames of 64x48
    limits = Limits(max_pixels=100_000)
    run(data, ops(Resize(width=96, enlarge=True)), limits=limits)  # 96x72x10 = 69120
    with pytest.raises(InvalidArgument) as err:
        run(data, ops(Resize(width=128, enlarge=True)), limits=limits)  # 128x96x10 = 122880
    assert err.value.reason == OUTPUT_TOO_LARGE and "10 frames" in err.value.message


def test_frames_op_validation() -> None:
    assert list(frames.kept(Frames(), 4)) == [0, 1, 2, 3]
    assert list(frames.kept(Frames(start=3, count=5), 4)) == [3]
    ctx = Context("operations[0].frames", 4096, frames=4)
    assert frames.validate(Frames(start=3), Size(1, 1), ctx) == Size(1, 1)
    with pytest.raises(InvalidArgument) as err:
        frames.validate(Frames(start=4), Size(1, 1), ctx)
    assert err.value.violations[0].field == "operations[0].frames.start"
    # A still image has one frame, 0.
    with pytest.raises(InvalidArgument):
        frames.validate(Frames(start=1), Size(1, 1), Context("operations[0].frames", 4096))
