from __future__ import annotations

import re

import pytest

from pixmesh import ops
from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Operation


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resize=800x600", ops.resize(800, 600, "fit")),
        ("resize=800x600,fill", ops.resize(800, 600, "fill")),
        ("resize=800x600,force,enlarge", ops.resize(800, 600, "force", enlarge=True)),
        ("resize=800x", ops.resize(800, 0)),
        ("resize=x600", ops.resize(0, 600)),
        ("  RESIZE = 800x600 , FILL ", ops.resize(800, 600, "fill")),
        ("convert=webp", ops.convert("webp")),
        ("convert=webp:80", ops.convert("webp", quality=80)),
        ("convert=jpg:90", ops.convert("jpeg", quality=90)),
        ("convert=webp:80,effort:2", ops.convert("webp", 80, effort=2)),
        ("convert=WEBP, Effort:0", ops.convert("webp", effort=0)),
        ("rotate=90", ops.rotate(90)),
        ("rotate=-45.5,#ff000080", ops.rotate(-45.5, "#ff000080")),
        ("crop=10,10,100,100", ops.crop(10, 10, 100, 100)),
        ("flip=vertical", ops.flip("vertical")),
        ("flip", ops.flip("horizontal")),
        ("metadata", ops.extract_metadata()),
        ("extract_metadata", ops.extract_metadata()),
        ("denoise=auto", ops.denoise(auto=True)),
        ("denoise=25", ops.denoise(sigma=25)),
        ("denoise=model:dncnn17-h", ops.denoise(model="dncnn17-h")),
        ("denoise", ops.denoise()),
    ],
)
def test_parse_builds_the_same_operation_as_the_builder(spec: str, expected: Operation) -> None:
    assert ops.parse(spec) == expected


def test_builders_fill_the_proto_fields() -> None:
    op = ops.resize(800, 600, mode="fill", enlarge=True)
    assert op.resize == operations_pb2.Resize(
        width=800, height=600, mode=operations_pb2.Resize.FILL, enlarge=True
    )
    assert ops.convert("WEBP", 80).convert.format == image_pb2.WEBP
    # HEIF is readable, not writable: Convert.format's rule (the one list of output formats) refuses it.
    with pytest.raises(
        ValueError, match="convert format must be one of JPEG, PNG, WEBP, AVIF, GIF, TIFF"
    ):
        ops.convert("heic")
    assert ops.flip("vertical").flip.axis == operations_pb2.Flip.VERTICAL
    assert ops.crop(1, 2, 3, 4).crop == operations_pb2.Crop(x=1, y=2, width=3, height=4)
    assert ops.extract_metadata().WhichOneof("op") == "extract_metadata"
    assert ops.denoise(auto=True).denoise.auto is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blurr=3", "unknown operation 'blurr'"),
        ("resize=800", "resize needs WIDTHxHEIGHT"),
        ("resize=x", "resize needs WIDTHxHEIGHT"),
        ("resize=axb", "width must be a whole number, not 'a'"),
        ("resize=800x600,stretch", "unknown resize flag 'stretch'"),
        ("resize=800x,fill", "resize mode 'fill' needs both width and height"),
        ("resize=-1x600", "resize width must be >= 0, not -1"),
        ("convert=", "convert needs a format"),
        ("convert=bmpx", "convert format must be one of"),
        ("convert=webp:101", "convert quality must be 0..100, not 101"),
        ("convert=webp:high", "quality must be a whole number"),
        ("convert=webp,effort:7", "convert effort must be 0..6, not 7"),
        ("convert=webp,effort:", "effort must be a whole number"),
        ("convert=jpeg:80,effort:2", "convert effort applies to webp only, not 'jpeg'"),
        ("convert=auto,effort:2", "convert effort applies to webp only, not 'auto'"),
        ("convert=webp,speed:2", "unknown convert flag 'speed:2'"),
        ("convert=webp,effort:1,effort:2", "convert effort is given twice"),
        ("rotate=", "rotate needs an angle"),
        ("rotate=720", "within -360..360"),
        ("rotate=90,red", "#rrggbb or #rrggbbaa"),
        ("crop=10,10,100", "crop needs X,Y,WIDTH,HEIGHT"),
        ("crop=10,10,0,100", "crop width must be >= 1, not 0"),
        ("flip=diagonal", "flip axis must be one of horizontal, vertical"),
        ("metadata=all", "metadata takes no arguments"),
        ("denoise=auto,25", "either auto or a sigma"),
        ("denoise=300", "sigma must be within 0..255"),
    ],
)
def test_parse_rejects_with_a_clear_message(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ops.parse(spec)
    assert message in str(info.value)
    assert repr(spec) in str(info.value)  # the user sees which --op was wrong


def test_convert_effort_is_set_only_when_given() -> None:
    assert ops.convert("webp", effort=0).convert == operations_pb2.Convert(
        format=image_pb2.WEBP, effort=0
    )
    assert ops.convert("webp", effort=0).convert.HasField("effort")  # 0 is an effort, not unset
    assert not ops.convert("webp").convert.HasField("effort")
    assert ops.convert("webp", 75, effort=6).convert.effort == 6
    with pytest.raises(ValueError, match=re.escape("convert effort must be 0..6, not -1")):
        ops.convert("webp", effort=-1)
    with pytest.raises(ValueError, match="applies to webp only"):
        ops.convert("avif", effort=2)


def test_resize_needs_a_side() -> None:
    with pytest.raises(ValueError, match="a width, a height or both"):
        ops.resize()


def test_coerce_mixes_strings_and_operations_and_rejects_empty() -> None:
    assert ops.coerce(["resize=10x10", ops.convert("png")]) == [
        ops.resize(10, 10),
        ops.convert("png"),
    ]
    with pytest.raises(ValueError, match="at least one operation"):
        ops.coerce([])
    with pytest.raises(ValueError, match="exactly one operation"):
        ops.coerce([Operation()])


def test_describe_is_short_and_readable() -> None:
    assert ops.describe(ops.parse("resize=800x600,fill")) == "resize 800x600 fill"
    assert ops.describe(ops.parse("convert=webp:80")) == "convert webp:80"
    assert ops.describe(ops.parse("convert=webp,effort:0")) == "convert webp effort 0"
    assert ops.describe(ops.parse("denoise=auto")) == "denoise auto"
    assert ops.describe(ops.parse("crop=1,2,3,4")) == "crop 3x4+1+2"


PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a1d4"
    "7d0000000049454e44ae426082"
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resize=800x600,fill_down", ops.resize(800, 600, "fill_down")),
        ("resize=800x600,auto,smart", ops.resize(800, 600, "auto", gravity="smart")),
        ("resize=800x600,fill,north_east", ops.resize(800, 600, "fill", gravity="north_east")),
        ("convert=auto", ops.convert("auto")),
        ("convert=auto:70", ops.convert("auto", 70)),
        ("blur=2.5", ops.blur(2.5)),
        ("sharpen", ops.sharpen()),
        ("sharpen=1.5,2,10", ops.sharpen(1.5, 2, 10)),
        ("sharpen=,3", ops.sharpen(amount=3)),
        ("pixelate=12", ops.pixelate(12)),
        ("adjust=contrast:20", ops.adjust(contrast=20)),
        (
            "adjust=brightness:-10,saturation:50",
            ops.adjust(brightness=-10, saturation=50),
        ),
        ("grayscale", ops.grayscale()),
        ("greyscale", ops.grayscale()),
        ("sepia", ops.duotone()),
        ("duotone", ops.duotone()),
        ("duotone=#000080,#ffff00", ops.duotone("#000080", "#ffff00")),
        ("flatten", ops.flatten()),
        ("flatten=#101010", ops.flatten("#101010")),
        ("round_corners=16", ops.round_corners(16)),
        ("round_corners=16,#ffffff00", ops.round_corners(16, "#ffffff00")),
        ("trim", ops.trim()),
        ("trim=10,#ffffff,equal", ops.trim(10, "#ffffff", equal_horizontal=True, equal_vertical=True)),
        ("trim=equal_vertical", ops.trim(equal_vertical=True)),
        ("pad=10", ops.pad(10)),
        ("pad=10,20", ops.pad(10, 20)),
        ("pad=1,2,3,4,#000000", ops.pad(1, 2, 3, 4, background="#000000")),
        ("extend=1000x800", ops.extend(1000, 800)),
        ("extend=x800,north,#000000", ops.extend(0, 800, gravity="north", background="#000000")),
        ("extend=ratio:1.5", ops.extend(aspect_ratio=1.5)),
        ("frames=2", ops.frames(2)),
        ("frames=0,1", ops.frames(0, 1)),
        ("redact=1,2,30,40", ops.redact([(1, 2, 30, 40)])),
        (
            "redact=1,2,30,40,50,60,7,8,pixelate,strength:20",
            ops.redact([(1, 2, 30, 40), (50, 60, 7, 8)], "pixelate", 20),
        ),
    ],
)  # fmt: skip
def test_parse_builds_the_newer_imaging_operations(spec: str, expected: Operation) -> None:
    assert ops.parse(spec) == expected


def test_newer_builders_fill_the_proto_fields(tmp_path: object) -> None:
    Gravity = operations_pb2.Gravity
    assert ops.blur(2).blur == operations_pb2.Blur(sigma=2)
    assert ops.sharpen(1, 2, 3).sharpen == operations_pb2.Sharpen(sigma=1, amount=2, threshold=3)
    assert ops.adjust(saturation=-100).adjust == operations_pb2.Adjust(saturation=-100)
    assert ops.pad(1, 2, 3).pad == operations_pb2.Pad(top=1, right=2, bottom=3, left=2)
    assert ops.pad(5).pad == operations_pb2.Pad(top=5, right=5, bottom=5, left=5)
    assert ops.extend(10, 20, gravity="south_west").extend.gravity == Gravity(
        anchor=Gravity.SOUTH_WEST
    )
    focus = ops.resize(100, 100, "fill", gravity=(0.25, 0.75), dpr=2).resize
    assert focus.gravity == Gravity(anchor=Gravity.FOCUS_POINT, x=0.25, y=0.75)
    assert focus.dpr == 2
    assert ops.convert("auto").convert == operations_pb2.Convert(auto=True)
    mark = ops.watermark(PNG_1PX, position="south_east", margin=8, scale=0.2, opacity=0.5)
    assert mark.watermark.image == PNG_1PX
    assert mark.watermark.position.anchor == Gravity.SOUTH_EAST
    assert mark.watermark.HasField("opacity") and mark.watermark.opacity == 0.5
    assert not ops.watermark(PNG_1PX, tile=True).watermark.HasField("opacity")
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    (tmp_path / "logo.png").write_bytes(PNG_1PX)
    assert ops.watermark(tmp_path / "logo.png").watermark.image == PNG_1PX
    text = ops.watermark_text("© pixmesh", size=24, color="#ffffff80", tile=True)
    assert text.watermark_text == operations_pb2.WatermarkText(
        text="© pixmesh", size=24, color="#ffffff80", tile=True
    )
    redact = ops.redact([(0, 0, 10, 10)], "pixelate").redact
    assert redact.method == operations_pb2.Redact.PIXELATE
    assert list(redact.regions) == [operations_pb2.Region(x=0, y=0, width=10, height=10)]
    assert ops.frames(1, 2).frames == operations_pb2.Frames(start=1, count=2)
    assert ops.trim(5).trim == operations_pb2.Trim(threshold=5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur=", "blur needs a sigma"),
        ("blur=0", "blur sigma must be within 0.1..100, not 0"),
        ("blur=big", "sigma must be a number"),
        ("sharpen=1,2,3,4", "sharpen takes SIGMA"),
        ("sharpen=20", "sharpen sigma must be within 0.1..10"),
        ("pixelate=1", "pixelate size must be 2..1024, not 1"),
        ("adjust=", "adjust needs a brightness"),
        ("adjust=gamma:2", "adjust takes brightness:N"),
        ("adjust=contrast:200", "adjust contrast must be within -100..100"),
        ("grayscale=1", "grayscale takes no arguments"),
        ("duotone=#000000", "duotone takes two colours"),
        ("duotone=#00000080,#ffffff", "duotone shadow must be #rrggbb"),
        ("flatten=white", "flatten background must be #rrggbb"),
        ("round_corners=", "round_corners needs a radius"),
        ("round_corners=0", "round_corners radius must be >= 1"),
        ("trim=300", "trim threshold must be 0..255"),
        ("pad=0", "pad needs at least one side"),
        ("pad=1,2,3,4,5", "pad needs 1..4 sides"),
        ("extend=", "extend needs a width, a height or an aspect_ratio"),
        ("extend=100x100,smart", "unknown extend argument 'smart'"),
        ("extend=ratio:500", "extend aspect_ratio must be within 0.01..100"),
        ("frames=", "frames needs START[,COUNT]"),
        ("redact=1,2,3", "four numbers each"),
        ("redact=1,2,0,4", "redact region 0 width must be >= 1"),
        ("redact=1,2,3,4,smudge", "region must be a whole number, not 'smudge'"),
        ("resize=10x10,fill,up", "unknown resize flag 'up'"),
    ],
)
def test_parse_rejects_bad_newer_operations(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ops.parse(spec)
    assert message in str(info.value)


def test_newer_builders_check_what_they_can() -> None:
    with pytest.raises(ValueError, match="position or tile"):
        ops.watermark_text("x", position="north", tile=True)
    with pytest.raises(ValueError, match=re.escape("1..256 characters")):
        ops.watermark_text("   ")
    with pytest.raises(ValueError, match="at most 262144 bytes"):
        ops.watermark(b"x" * (256 * 1024 + 1))
    with pytest.raises(ValueError, match=re.escape("opacity must be within 0..1")):
        ops.watermark(PNG_1PX, opacity=2)
    with pytest.raises(ValueError, match="position must be one of center"):
        ops.watermark(PNG_1PX, position="smart")
    with pytest.raises(ValueError, match=re.escape("1..64 regions")):
        ops.redact([])
    with pytest.raises(ValueError, match=re.escape("gravity x must be within 0..1")):
        ops.resize(10, 10, "fill", gravity=(2.0, 0.5))
    with pytest.raises(ValueError, match="dpr must be within"):
        ops.resize(10, dpr=-1)
    with pytest.raises(ValueError, match="adjust needs"):
        ops.adjust()


def test_describe_names_the_fields_of_newer_operations() -> None:
    assert ops.describe(ops.blur(2)) == "blur sigma=2"
    assert ops.describe(ops.grayscale()) == "grayscale"
    assert ops.describe(ops.pad(1, 2)) == "pad top=1 right=2 bottom=1 left=2"
    assert ops.describe(ops.watermark(PNG_1PX)) == f"watermark image=<{len(PNG_1PX)} bytes>"
    assert ops.describe(ops.extend(10, gravity="north")) == "extend width=10 gravity=north"
    assert ops.describe(ops.redact([(0, 0, 1, 1)])) == "redact regions=<1> method=1"


def test_renditions_from_messages_mappings_and_specs() -> None:
    thumb = ops.rendition("thumb", ["resize=200x200,fill", ops.convert("webp")])
    assert thumb == operations_pb2.Rendition(
        name="thumb", operations=[ops.resize(200, 200, "fill"), ops.convert("webp")]
    )
    assert ops.parse_rendition("thumb=resize=200x200,fill;convert=webp") == thumb
    assert ops.parse_rendition(" thumb = resize=200x200,fill ; convert=webp ; ") == thumb
    assert ops.parse_rendition("original") == operations_pb2.Rendition(name="original")
    assert ops.parse_rendition("small=@thumb;grayscale") == operations_pb2.Rendition(
        name="small", preset="thumb", operations=[ops.grayscale()]
    )
    mapping = ops.coerce_renditions(
        {"thumb": ["resize=200x200,fill", "convert=webp"], "grey": "grayscale", "same": []}
    )
    assert [r.name for r in mapping] == ["thumb", "grey", "same"]
    assert mapping[0] == thumb and list(mapping[1].operations) == [ops.grayscale()]
    assert ops.coerce_renditions([thumb]) == [thumb]
    assert ops.coerce_renditions(None) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ops.rendition("Thumb"), "rendition names are 1..64"),
        (lambda: ops.rendition("x" * 65), "rendition names are 1..64"),
        (lambda: ops.rendition("a", ["blurr=1"]), "unknown operation 'blurr'"),
        (lambda: ops.parse_rendition("=resize=10x10"), "bad rendition '=resize=10x10'"),
        (lambda: ops.parse_rendition("a=@x;@y"), "one preset at most"),
        (lambda: ops.parse_rendition("a=resize=10"), "resize needs WIDTHxHEIGHT"),
        (lambda: ops.coerce_renditions([ops.rendition("a"), ops.rendition("a")]), "named twice"),
        (lambda: ops.coerce_renditions(["thumb"]), "Rendition messages"),  # type: ignore[list-item]
        (lambda: ops.coerce("resize=10x10"), "must be a list"),  # type: ignore[arg-type]
    ],
)
def test_renditions_are_checked_before_any_call(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize(
    ("spec", "mode"),
    [
        ("orient=ignore", operations_pb2.Orient.IGNORE),
        ("orient:ignore", operations_pb2.Orient.IGNORE),
        (" ORIENT : Ignore ", operations_pb2.Orient.IGNORE),
        ("orient=auto", operations_pb2.Orient.AUTO),
        ("orient", operations_pb2.Orient.AUTO),
    ],
)
def test_orient_spec(spec: str, mode: int) -> None:
    op = ops.parse(spec)
    assert op.WhichOneof("op") == "orient" and op.orient.mode == mode
    assert op == ops.orient("ignore" if mode == operations_pb2.Orient.IGNORE else "auto")


def test_orient_builder_and_describe() -> None:
    assert ops.orient().orient.mode == operations_pb2.Orient.AUTO
    assert ops.orient(mode="IGNORE").orient == operations_pb2.Orient(
        mode=operations_pb2.Orient.IGNORE
    )
    assert ops.describe(ops.orient("ignore")) == "orient ignore"
    assert ops.describe(ops.orient()) == "orient auto"
    assert ops.describe(Operation(orient=operations_pb2.Orient())) == "orient auto"
    with pytest.raises(ValueError, match="orient mode must be one of auto, ignore, not 'upright'"):
        ops.orient("upright")
    with pytest.raises(ValueError, match="'orient=sideways'"):
        ops.parse("orient=sideways")
    # A ':' only stands for the '=' after the name: convert=webp:80 is unchanged.
    assert ops.parse("convert:webp:80") == ops.parse("convert=webp:80")
    assert ops.coerce(["orient:ignore", "resize=800x"]) == [ops.orient("ignore"), ops.resize(800)]
