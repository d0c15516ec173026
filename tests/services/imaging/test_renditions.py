"""Renditions: one decode, the shared operations once, then each rendition's own (pipeline.run)."""

import io
import time
from typing import Any

import pytest
from PIL import Image, ImageFile
from PIL.JpegImagePlugin import JpegImageFile

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import (
    Convert,
    Crop,
    Frames,
    Grayscale,
    Pad,
    Resize,
    RoundCorners,
    Trim,
)
from services.imaging import pipeline
from services.imaging.errors import (
    ANIMATION_UNSUPPORTED,
    DEADLINE_EXCEEDED,
    MAX_BYTES_UNREACHABLE,
    OUTPUT_TOO_LARGE,
    TOO_MANY_OPERATIONS,
    UNKNOWN_OPERATION,
)
from services.imaging.limits import Limits
from services.imaging.pipeline import run
from services.runtime.errors import DeadlineExceeded, InvalidArgument

from .samples import RED, animation, close, colour_at, decode, encode, moving_square, ops, scene

LIMITS = Limits()


def rendition(name: str, *items: Any) -> operations_pb2.Rendition:
    return operations_pb2.Rendition(name=name, operations=ops(*items))


def jpeg(width: int = 1600, height: int = 1200) -> bytes:
    return encode(scene(width, height), "JPEG", quality=90)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The format of every image file whose pixels get decoded (ImageFile.load with work to do)."""
    seen: list[str] = []
    real = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        if self.tile:
            seen.append(str(self.format))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


def test_each_rendition_is_what_its_whole_pipeline_gives_and_the_source_is_decoded_once(
    decodes: list[str],
) -> None:
    data = jpeg()
    shared = ops(Resize(width=800))
    renditions = [
        rendition(
            "thumb", Resize(width=100, height=100, mode=Resize.FILL), Convert(format=image_pb2.WEBP)
        ),
        rendition("rounded", Pad(top=10, bottom=10), RoundCorners(radius=20)),
        rendition("as-is"),  # no operations: the shared result, after one that made new pixels
        rendition("grey", Grayscale(), Convert(format=image_pb2.PNG)),
    ]

    result = run(data, shared, renditions, limits=LIMITS)

    assert decodes == ["JPEG"]
    assert [name for name, _ in result.renditions] == ["thumb", "rounded", "as-is", "grey"]
    got = {name: r for name, r in result.renditions}
    assert (got["thumb"].format, got["thumb"].width, got["thumb"].height) == (
        image_pb2.WEBP,
        100,
        100,
    )
    assert (got["rounded"].format, got["rounded"].width, got["rounded"].height) == (
        image_pb2.JPEG,
        800,
        620,
    )
    assert (got["as-is"].format, got["as-is"].width, got["as-is"].height) == (
        image_pb2.JPEG,
        800,
        600,
    )
    assert (got["grey"].format, got["grey"].content_type, got["grey"].extension) == (
        image_pb2.PNG,
        "image/png",
        "png",
    )
    assert decode(got["grey"].data).mode == "L"
    # Byte for byte what each rendition's pipeline gives on its own: the shared resize decides
    # the JPEG draft for all of them, and no rendition sees another's pixels.
    decodes.clear()
    for r in renditions:
        alone = run(data, [*shared, *r.operations], limits=LIMITS).image
        assert got[r.name].data == alone.data, r.name
        assert got[r.name].frames == 1 and not got[r.name].flattened
    assert decodes == ["JPEG"] * len(renditions)  # the spy counts: each run alone decodes


def test_timings_have_the_shared_steps_once_and_each_renditions_steps_by_name() -> None:
    result = run(
        jpeg(320, 240),
        ops(Resize(width=200)),
        [rendition("small", Resize(width=50)), rendition("same")],
        limits=LIMITS,
    )
    steps = list(result.timings)
    assert steps[:7] == [
        "probe",
        "validate",
        "decode",
        "orient",
        "colour",
        "normalize",
        "op0.resize",
    ]
    assert steps.count("decode") == 1
    assert steps[7:] == [
        "small.op0.resize",
        "small.strip",
        "small.encode",
        "same.strip",
        "same.encode",
    ]
    small = result.renditions[0][1]
    assert list(small.timings) == ["small.op0.resize", "small.strip", "small.encode"]
    assert "decode" in result.shared_timings and "small.encode" not in result.shared_timings


def test_without_a_convert_a_rendition_keeps_the_format_of_the_shared_operations() -> None:
    result = run(
        jpeg(320, 240),
        ops(Convert(format=image_pb2.WEBP, quality=50)),
        [
            rendition("inherits", Resize(width=100)),
            rendition("converts", Resize(width=100), Convert(format=image_pb2.PNG)),
        ],
        limits=LIMITS,
    )
    got = dict(result.renditions)
    assert (
        got["inherits"].format == image_pb2.WEBP and decode(got["inherits"].data).format == "WEBP"
    )
    assert got["converts"].format == image_pb2.PNG and decode(got["converts"].data).format == "PNG"
    # The shared Convert's options apply to the rendition that inherits it.
    alone = run(
        jpeg(320, 240),
        ops(Convert(format=image_pb2.WEBP, quality=50), Resize(width=100)),
        limits=LIMITS,
    ).image
    assert got["inherits"].data == alone.data


def test_the_default_format_and_the_source_format_apply_as_for_one_pipeline() -> None:
    png = encode(scene(), "PNG")
    result = run(png, [], [rendition("a"), rendition("b", Resize(width=32))], limits=LIMITS)
    assert [r.format for _, r in result.renditions] == [image_pb2.PNG, image_pb2.PNG]
    assert result.renditions[0][1].data == run(png, [], limits=LIMITS).image.data
    assert result.renditions[1][1].data == run(png, ops(Resize(width=32)), limits=LIMITS).image.data
    result = run(
        png,
        [],
        [rendition("a"), rendition("b", Convert(format=image_pb2.GIF))],
        limits=LIMITS,
        default_format=image_pb2.WEBP,
    )
    assert [r.format for _, r in result.renditions] == [image_pb2.WEBP, image_pb2.GIF]


def draft_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int] | None]:
    calls: list[tuple[int, int] | None] = []
    real_draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        calls.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return calls


def test_the_jpeg_draft_is_chosen_for_the_largest_rendition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = jpeg(1600, 1200)
    large = rendition("large", Resize(width=700))  # 2.3x: decode at 1/2
    small = rendition("small", Resize(width=100))  # 16x: 1/8 alone
    calls = draft_spy(monkeypatch)

    both = dict(run(data, [], [small, large], limits=LIMITS).renditions)
    assert calls == [(800, 600)]
    large_alone = run(data, [], [large], limits=LIMITS).renditions[0][1]
    small_alone = run(data, [], [small], limits=LIMITS).renditions[0][1]
    assert calls[1:] == [(800, 600), (200, 150)]

    # The large rendition is exactly what it would be without the small one, and what a plain
    # pipeline gives; the small one is made from the larger decode box-reduced by 4 (where its
    # own draft would have decoded at 1/8), at the same size and within 1% of its bytes alone.
    assert (
        both["large"].data
        == large_alone.data
        == run(data, large.operations, limits=LIMITS).image.data
    )
    assert (both["large"].width, both["large"].height) == (700, 525)
    assert (both["small"].width, both["small"].height) == (small_alone.width, small_alone.height)
    assert close(colour_at(decode(both["small"].data), 5, 5), (*RED, 255))
    assert abs(len(both["small"].data) / len(small_alone.data) - 1) <= 0.01
    assert "small.reduce" in both["small"].timings and "large.reduce" not in both["large"].timings


def test_no_draft_when_a_rendition_does_not_start_with_a_resize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = jpeg(1600, 1200)
    calls = draft_spy(monkeypatch)
    result = run(
        data,
        [],
        [
            rendition("thumb", Resize(width=100)),
            rendition("crop", Crop(width=400, height=400), Resize(width=50)),
        ],
        limits=LIMITS,
    )
    assert calls == []
    assert [(r.width, r.height) for _, r in result.renditions] == [(100, 75), (50, 50)]
    run(data, [], [rendition("thumb", Resize(width=100)), rendition("full")], limits=LIMITS)
    assert calls == []  # the full-size rendition needs every pixel


def test_animations_branch_with_their_frames_and_durations() -> None:
    gif = animation(moving_square(4), durations=[100, 200, 300, 400])
    shared = ops(Resize(width=32))
    renditions = [
        rendition("still", Frames(start=2, count=1), Convert(format=image_pb2.JPEG)),
        rendition("animated"),
        rendition("webp", Frames(start=1, count=2), Convert(format=image_pb2.WEBP)),
    ]
    result = run(gif, shared, renditions, limits=LIMITS)
    got = dict(result.renditions)
    assert (got["still"].format, got["still"].frames) == (image_pb2.JPEG, 1)
    assert (got["animated"].format, got["animated"].frames) == (image_pb2.GIF, 4)
    assert (got["webp"].format, got["webp"].frames) == (image_pb2.WEBP, 2)
    assert durations_of(got["animated"].data) == [100, 200, 300, 400]
    assert durations_of(got["webp"].data) == [200, 300]
    for r in renditions:
        alone = run(gif, [*shared, *r.operations], limits=LIMITS).image
        assert got[r.name].data == alone.data, r.name


def durations_of(data: bytes) -> list[int]:
    img = Image.open(io.BytesIO(data))
    out = []
    for index in range(getattr(img, "n_frames", 1)):
        img.seek(index)
        img.load()
        out.append(int(img.info.get("duration", 0)))
    return out


def field_of(err: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return err.value.violations[0].field


def test_a_bad_rendition_fails_before_anything_is_decoded(decodes: list[str]) -> None:
    data = jpeg(320, 240)
    shared = ops(Resize(width=200))  # 200x150
    with pytest.raises(InvalidArgument) as err:
        run(
            data,
            shared,
            [
                rendition("ok", Resize(width=50)),
                rendition("bad", Grayscale(), Crop(x=190, width=20, height=20)),
            ],
            limits=LIMITS,
        )
    assert field_of(err).startswith("renditions[1].operations[1].crop.")
    assert err.value.message.startswith("renditions[1].operations[1].crop")
    assert decodes == []
    # An empty operation.
    bad = operations_pb2.Rendition(
        name="x", operations=[*ops(Resize(width=10)), operations_pb2.Operation()]
    )
    with pytest.raises(InvalidArgument) as err:
        run(data, shared, [bad], limits=LIMITS)
    assert (field_of(err), err.value.reason) == ("renditions[0].operations[1]", UNKNOWN_OPERATION)
    # A shared operation at fault keeps its own field.
    with pytest.raises(InvalidArgument) as err:
        run(data, ops(Crop(x=500, width=10, height=10)), [rendition("a")], limits=LIMITS)
    assert field_of(err).startswith("operations[0].crop")
    assert decodes == []


def test_rendition_limits_and_whole_pipeline_faults_name_the_rendition() -> None:
    data = jpeg(320, 240)
    limits = Limits(max_operations=3, max_output_dimension=300, max_renditions=2)
    two = ops(Resize(width=200), Grayscale())
    with pytest.raises(InvalidArgument) as err:
        run(
            data,
            two,
            [rendition("a"), rendition("b", Resize(width=100), Grayscale())],
            limits=limits,
        )
    assert (field_of(err), err.value.reason) == ("renditions[1].operations", TOO_MANY_OPERATIONS)
    # The output of the rendition is too large, not the shared result.
    with pytest.raises(InvalidArgument) as err:
        run(data, ops(Resize(width=100)), [rendition("big", Pad(left=250))], limits=limits)
    assert field_of(err) == "renditions[0].operations[0].pad"
    assert err.value.reason == OUTPUT_TOO_LARGE
    with pytest.raises(InvalidArgument) as err:
        run(data, [], [rendition("a"), rendition("b"), rendition("c")], limits=limits)
    assert (field_of(err), err.value.reason) == ("renditions", "TOO_MANY_RENDITIONS")
    with pytest.raises(InvalidArgument) as err:
        run(data, [], [rendition("a"), rendition("a")], limits=limits)
    assert field_of(err) == "renditions[1].name"
    # No renditions: a plain job, whose one unnamed output's faults are the job's.
    with pytest.raises(InvalidArgument) as err:
        run(data, [], [], limits=limits)
    assert (field_of(err), err.value.reason) == ("operations", OUTPUT_TOO_LARGE)
    assert [
        name for name, _ in run(data, ops(Resize(width=100)), [], limits=limits).renditions
    ] == [""]


def test_an_animation_rendition_that_cannot_animate_is_refused() -> None:
    gif = animation(moving_square(3))
    with pytest.raises(InvalidArgument) as err:
        run(
            gif,
            [],
            [rendition("ok"), rendition("jpeg", Convert(format=image_pb2.JPEG))],
            limits=LIMITS,
        )
    assert (field_of(err), err.value.reason) == (
        "renditions[1].operations[0].convert.format",
        ANIMATION_UNSUPPORTED,
    )


def test_renditions_must_agree_on_keep_icc() -> None:
    with pytest.raises(InvalidArgument) as err:
        run(
            jpeg(320, 240),
            [],
            [rendition("a"), rendition("b", Convert(format=image_pb2.PNG, keep_icc=True))],
            limits=LIMITS,
        )
    assert field_of(err) == "renditions[1].operations[0].convert.keep_icc"
    # Agreeing through a shared Convert is fine.
    result = run(
        jpeg(320, 240),
        ops(Convert(format=image_pb2.PNG, keep_icc=True)),
        [rendition("a"), rendition("b", Resize(width=10))],
        limits=LIMITS,
    )
    assert len(result.renditions) == 2


def test_faults_found_while_running_name_the_rendition() -> None:
    # After a trim the size is only known from the pixels: the crop is checked while running.
    bordered = encode(scene(100, 80).crop((-20, -20, 120, 100)), "PNG")
    with pytest.raises(InvalidArgument) as err:
        run(
            bordered,
            ops(Trim()),
            [
                rendition("fine", Crop(width=50, height=50)),
                rendition("outside", Crop(x=110, width=10, height=10)),
            ],
            limits=LIMITS,
        )
    assert field_of(err).startswith("renditions[1].operations[0].crop")
    with pytest.raises(InvalidArgument) as err:
        run(
            jpeg(800, 600),
            [],
            [rendition("tiny", Convert(format=image_pb2.JPEG, max_bytes=100))],
            limits=LIMITS,
        )
    assert (field_of(err), err.value.reason) == (
        "renditions[0].operations[0].convert.max_bytes",
        MAX_BYTES_UNREACHABLE,
    )


def test_the_deadline_is_checked_between_renditions(monkeypatch: pytest.MonkeyPatch) -> None:
    real_encode = pipeline.encode

    def slow_encode(*args: Any, **kwargs: Any) -> bytes:
        time.sleep(0.3)
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(pipeline, "encode", slow_encode)
    with pytest.raises(DeadlineExceeded) as err:
        run(
            jpeg(320, 240),
            [],
            [rendition("first", Resize(width=100)), rendition("second", Resize(width=50))],
            limits=LIMITS,
            deadline=time.monotonic() + 0.2,
        )
    assert err.value.reason == DEADLINE_EXCEEDED
    assert "the second." in err.value.message  # its reduce (see below) or resize step
