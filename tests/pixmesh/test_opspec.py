"""The descriptor-driven side of pixmesh.ops: what works for every operation of the contract
without a line written for it (builders, the generic NAME=ARGS spelling, the REST JSON, checks
read from the proto's rules)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from pixmesh import ops
from pixmesh._opspec import OPERATIONS, ArgumentError, build, choices, parse_args, range_text
from pixmesh.common.v1 import operations_pb2
from pixmesh.common.v1.operations_pb2 import Operation

GRAVITY = operations_pb2.Gravity.DESCRIPTOR


def token_for(field: Any) -> tuple[str, object]:
    """A `FIELD:VALUE` token for any field the generic spelling can set, and the value it
    should give; ("", None) for the fields only JSON can carry (repeated messages)."""
    if field.is_repeated:
        return "", None
    if field.type == FieldDescriptor.TYPE_BOOL:
        return field.name, True
    if field.type == FieldDescriptor.TYPE_ENUM:
        name = next(iter(choices(field.enum_type)))
        return f"{field.name}:{name}", name
    if field.message_type is GRAVITY:
        return f"{field.name}:north", "north"
    if field.message_type is not None:
        return "", None
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return f"{field.name}:0.5", 0.5
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}:#102030", "#102030"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "", None  # a file path: see test_bytes_fields_read_a_file
    return f"{field.name}:3", 3


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_field_of_every_operation_is_parseable(name: str) -> None:
    for field in OPERATIONS[name].fields:
        token, expected = token_for(field)
        if not token:
            continue
        values, _ = parse_args(name, token)
        assert values == {field.name: expected}, (name, field.name)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_has_a_builder_and_reads_its_rest_json(name: str) -> None:
    builder = getattr(ops, name)
    assert callable(builder) and builder.__name__ == name
    assert name in dir(ops)
    # The REST JSON of an operation's message is read by the same NAME=ARGS parser; the
    # empty object is the message with every field unset (its rules say whether that is valid).
    try:
        op = ops.parse(f"{name}={{}}")
    except ValueError as exc:
        assert f"bad operation '{name}={{}}'" in str(exc)
    else:
        assert op.WhichOneof("op") == name


def test_json_spelling_sets_fields_the_short_forms_do_not() -> None:
    op = ops.parse('convert={"format": "WEBP", "lossless": true, "max_bytes": "0"}')
    assert op == ops.convert("webp", lossless=True)
    regions = ops.parse('redact={"regions": [{"x": 1, "y": 2, "width": 3, "height": 4}]}')
    assert regions.redact.regions[0] == operations_pb2.Region(x=1, y=2, width=3, height=4)
    with pytest.raises(ValueError, match="resize JSON"):
        ops.parse('resize={"width": "wide"}')
    with pytest.raises(ValueError, match=re.escape("blur sigma must be within 0.1..100, not 0")):
        ops.parse("blur={}")


def test_generic_builders_take_fields_in_order_or_by_name() -> None:
    generated = [n for n in OPERATIONS if n not in vars(ops)]
    for name in generated:
        builder = getattr(ops, name)
        assert builder is getattr(ops, name)  # made once
        assert name in (builder.__doc__ or "")
    with pytest.raises(AttributeError):
        ops.no_such_operation  # noqa: B018


def test_builders_take_the_messages_other_fields_by_name() -> None:
    assert ops.resize(800, max_width=400).resize == operations_pb2.Resize(
        width=800, max_width=400, mode=operations_pb2.Resize.FIT
    )
    assert ops.convert("png", compression_level=0).convert.HasField("compression_level")
    with pytest.raises(ArgumentError, match="resize has no field 'colour'"):
        ops.resize(10, colour="#fff")


def test_values_are_converted_by_the_field_type() -> None:
    resize = build("resize", {"width": 10, "mode": "FILL", "height": 5, "gravity": (0.5, 0.25)})
    assert resize.resize.mode == operations_pb2.Resize.FILL
    assert resize.resize.gravity == operations_pb2.Gravity(
        anchor=operations_pb2.Gravity.FOCUS_POINT, x=0.5, y=0.25
    )
    cases: list[tuple[dict[str, object], str]] = [
        ({"width": "10"}, "resize width must be an integer, not '10'"),
        ({"width": True}, "resize width must be an integer, not True"),
        ({"width": -1}, "resize width must be >= 0, not -1"),
        ({"width": 1, "enlarge": 1}, "resize enlarge must be True or False, not 1"),
        ({"width": 1, "dpr": "2"}, "resize dpr must be a number, not '2'"),
        ({"width": 1, "mode": "stretch"}, "resize mode must be one of fit, fill, force,"),
        ({"width": 1, "gravity": "up"}, "resize gravity must be one of center, north,"),
    ]
    for values, message in cases:
        with pytest.raises(ArgumentError, match=re.escape(message)):
            build("resize", values)
    with pytest.raises(ArgumentError, match=re.escape("redact region 0 must be (x, y, width")):
        ops.redact([(1, 2, 3)])  # type: ignore[list-item]


def test_bytes_fields_read_a_file(tmp_path: Any) -> None:
    (tmp_path / "mark.png").write_bytes(b"\x89PNG...")
    op = ops.parse(f"watermark={tmp_path / 'mark.png'},south_east,opacity:0.5,tile:false")
    assert op.watermark.image == b"\x89PNG..."
    assert op.watermark.position.anchor == operations_pb2.Gravity.SOUTH_EAST
    assert op.watermark.opacity == 0.5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flip=diagonal", "flip axis must be one of horizontal, vertical, not 'diagonal'"),
        ("blur=1,2", "blur takes SIGMA"),
        ("adjust=contrast:1,contrast:2", "adjust contrast is given twice"),
        ("adjust=gamma:2", "unknown adjust flag 'gamma:2'; adjust takes brightness:N"),
        ("pixelate=", "pixelate needs a size"),
        ("watermark_text=", "watermark_text needs a text"),
        ("watermark=", "watermark needs an image"),
        ("sharpen=5,1,256", "sharpen threshold must be 0..255, not 256"),
        ("watermark_text=hi,opacity:0", "watermark_text opacity must be within 0..1, above 0"),
        ("extend=10x10,gravity:smart", "extend gravity must be one of center, north, north_east"),
        ("redact=0,0,1,1,method:smudge", "redact method must be one of blur, pixelate"),
    ],
)
def test_generic_messages_name_the_operation_and_field(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ops.parse(spec)
    assert message in str(info.value)


def test_range_text_reads_the_annotations() -> None:
    fields = operations_pb2.Convert.DESCRIPTOR.fields_by_name
    assert range_text(fields["quality"]) == "0..100"
    assert range_text(fields["colors"]) == "2..256"
    assert range_text(operations_pb2.Blur.DESCRIPTOR.fields_by_name["sigma"]) == "within 0.1..100"
    assert range_text(operations_pb2.Redact.DESCRIPTOR.fields_by_name["regions"]) == (
        "1..64 regions"
    )
    assert range_text(fields["keep_icc"]) == ""


def test_built_operations_round_trip_through_json() -> None:
    op = ops.resize(800, 600, "fill", gravity="north_east", dpr=2)
    spelled = json_format.MessageToJson(op.resize, indent=None)
    assert ops.parse(f"resize={spelled}") == op
    assert isinstance(op, Operation)
