from __future__ import annotations

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
    assert ops.convert("heic").convert.format == image_pb2.HEIF
    assert ops.flip("vertical").flip.axis == operations_pb2.Flip.VERTICAL
    assert ops.crop(1, 2, 3, 4).crop == operations_pb2.Crop(x=1, y=2, width=3, height=4)
    assert ops.extract_metadata().WhichOneof("op") == "extract_metadata"
    assert ops.denoise(auto=True).denoise.auto is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur=3", "unknown operation 'blur'"),
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
    assert ops.describe(ops.parse("denoise=auto")) == "denoise auto"
    assert ops.describe(ops.parse("crop=1,2,3,4")) == "crop 3x4+1+2"
