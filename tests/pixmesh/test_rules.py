"""pixmesh.rules: the operations' rules and descriptions, read from operations.proto.

The contract test walks every field of every operation (and of the messages they hold, Gravity
and Region): each is described (a comment), constrained (a buf.validate rule, a message rule that
names it, or a "No rule here:" comment saying who checks it; bools are free) and parseable (the
CLI's NAME=ARGS parser reads a value for it back into the message).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from pixmesh import _opspec, ops, rules
from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.errors_pb2 import Error

Op = operations_pb2.Operation


def _messages(descriptor: Descriptor, seen: set[str]) -> Iterator[Descriptor]:
    """`descriptor` and every message of operations.proto reachable from its fields."""
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    yield descriptor
    for field in descriptor.fields:
        sub = field.message_type
        if sub is not None and sub.file is operations_pb2.DESCRIPTOR:
            yield from _messages(sub, seen)


def _all_fields() -> list[tuple[str, Any]]:
    seen: set[str] = set()
    out = []
    for op in rules.OPERATIONS.values():
        for message in _messages(op.message.DESCRIPTOR, seen):
            out += [(f"{message.name}.{f.name}", f) for f in message.fields]
    return out


FIELDS = _all_fields()


def test_every_operation_and_message_is_described() -> None:
    for op in rules.OPERATIONS.values():
        assert op.description, f"{op.name}: no comment on its message"


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[n for n, _ in FIELDS])
def test_every_field_is_described_and_constrained(name: str, field: FieldDescriptor) -> None:
    message = field.containing_type
    assert rules.describe_field(message, field.name), f"{name} has no comment"
    named = any(i.split(".", 1)[0] == field.name for i, _ in rules.message_cel(message))
    constrained = bool(rules.field_rules(field).ByteSize()) or named
    documented = bool(rules.no_rule(message, field.name))
    assert constrained or documented or field.type == FieldDescriptor.TYPE_BOOL, (
        f"{name}: add a buf.validate rule, or say 'No rule here: <who checks what>' in its comment"
    )


def _sample(field: FieldDescriptor) -> object:
    """A value the field's rules accept."""
    rule = rules.field_rules(field)
    kind = rule.WhichOneof("type")
    if field.enum_type is not None:
        allowed = list(getattr(rule.enum, "in")) or [v.number for v in field.enum_type.values]
        return field.enum_type.values_by_number[next(n for n in allowed if n)].name
    if field.type == FieldDescriptor.TYPE_STRING:
        cel = " ".join(r.expression for r in rule.cel)
        return "#102030" if "#" in cel else "hello"
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        typed = getattr(rule, kind) if kind in ("float", "double") else None
        if typed is not None and typed.HasField("gte"):
            return float(typed.gte) or 0.5
        return 0.5
    typed = getattr(rule, kind) if kind in ("uint32", "uint64", "int32", "int64") else None
    if typed is not None and typed.HasField("gte"):
        return int(typed.gte)
    return 3


@pytest.mark.parametrize("name", list(rules.OPERATIONS))
def test_every_field_parses_from_the_cli_spelling(name: str) -> None:
    """FIELD:VALUE for scalars and enums, the REST JSON for messages, lists and bytes."""
    for field in rules.OPERATIONS[name].message.DESCRIPTOR.fields:
        if field.message_type or field.is_repeated or field.type == FieldDescriptor.TYPE_BYTES:
            value: Any = {"anchor": "NORTH"} if field.message_type is not None else None
            if field.is_repeated:
                value = (
                    [{"x": 1, "y": 2, "width": 3, "height": 4}]
                    if field.message_type is not None
                    else [_sample(field)]
                )
            if field.type == FieldDescriptor.TYPE_BYTES:
                value = base64.b64encode(b"\x89PNG").decode()
            _, params = _opspec.parse_args(name, json.dumps({field.json_name: value}))
            assert params is not None and params.ListFields(), f"{name}.{field.name}"
            continue
        sample = _sample(field)
        token = field.name if field.type == FieldDescriptor.TYPE_BOOL else f"{field.name}:{sample}"
        values, _ = _opspec.parse_args(name, token.lower() if field.enum_type else token)
        op = _opspec.build(name, values, check=False)
        got = getattr(getattr(op, name), field.name)
        if field.enum_type is not None:
            got = field.enum_type.values_by_number[got].name
        expected = True if field.type == FieldDescriptor.TYPE_BOOL else sample
        assert got == pytest.approx(expected) if isinstance(got, float) else got == expected, (
            f"{name}={token} read {field.name} as {got!r}"
        )


def test_violations_name_the_field_in_the_projects_words() -> None:
    found = rules.violations(Op(rotate=operations_pb2.Rotate(angle=400)), "operations[2]")
    assert [(v.field, v.description) for v in found] == [
        ("operations[2].rotate.angle", "must be between -360 and 360")
    ]
    # A message rule whose id names a field is reported on that field.
    found = rules.violations(Op(crop=operations_pb2.Crop(width=3, width_ratio=0.5, height=2)))
    assert [(v.field, v.description) for v in found] == [
        ("crop.width_ratio", "set width or width_ratio, not both")
    ]
    # A rule of the whole message stays on the message.
    found = rules.violations(Op(resize=operations_pb2.Resize()))
    assert [(v.field, v.description) for v in found] == [
        ("resize", "needs a width, a height or both")
    ]
    assert rules.violations(Op(resize=operations_pb2.Resize(width=3))) == []


def test_check_raises_invalid_argument_with_every_violation() -> None:
    with pytest.raises(rules.RuleViolation) as err:
        rules.check(Op(redact=operations_pb2.Redact(method=9)), "operations[0]")
    assert err.value.reason == "INVALID_ARGUMENT"
    assert [v.field for v in err.value.violations] == [
        "operations[0].redact.regions",
        "operations[0].redact.method",
    ]
    assert err.value.violations[0].description == "must have 1..64 items"


def test_an_empty_operation_is_a_violation_not_skipped() -> None:
    assert [v.field for v in rules.violations(Op())] == ["op"]


def test_dpr_has_one_limit() -> None:
    """The SDK once accepted dpr up to 10 and imaging up to 8: the proto says 8, for all."""
    assert rules.OPERATIONS["resize"].field("dpr").constraint == "0..8"
    assert rules.violations(Op(resize=operations_pb2.Resize(width=1, dpr=8))) == []
    assert [
        v.field for v in rules.violations(Op(resize=operations_pb2.Resize(width=1, dpr=9)))
    ] == ["resize.dpr"]
    # The SDK's builder says so too (it once accepted up to 10).
    assert ops.resize(100, dpr=8).resize.dpr == 8
    with pytest.raises(ValueError, match=r"dpr must be within 0\.\.8"):
        ops.resize(100, dpr=9)


def test_list_operations_entry_is_the_protos() -> None:
    info = rules.operation_info("blur", "imaging")
    assert info.description == "Gaussian blur."
    (sigma,) = info.parameters
    assert (sigma.name, sigma.type, sigma.constraint) == ("sigma", "float", "0.1..100")
    assert sigma.description == "Standard deviation in pixels, 0.1..100."
    width = rules.OPERATIONS["resize"].field("width")
    assert "max_output_dimension" in width.constraint  # the "No rule here:" part
    assert "No rule" not in width.description


def test_output_formats_are_convert_formats_rule() -> None:
    names = [image_pb2.ImageFormat.Name(f) for f in rules.OUTPUT_FORMATS]
    assert names == ["JPEG", "PNG", "WEBP", "AVIF", "GIF", "TIFF"]


def test_error_reasons_are_one_enum() -> None:
    """ErrorInfo reasons are the names of pixmesh.common.v1.Error.Reason (wire text unchanged)."""
    assert Error.Reason.Name(Error.IMAGE_CORRUPT) == "IMAGE_CORRUPT"
    assert Error.Reason.Value("TOO_MANY_OPERATIONS") == Error.TOO_MANY_OPERATIONS
    assert rules.RuleViolation("x", reason="INVALID_ARGUMENT").reason in Error.Reason.keys()  # noqa: SIM118


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("thumb", True),
        ("a-b_0", True),
        ("x" * 64, True),
        ("", False),
        ("Big", False),
        ("x" * 65, False),
        ("a b", False),
    ],
)
def test_rendition_name_is_the_proto_rule(name: str, ok: bool) -> None:
    # One rule, Rendition.name's pattern: protovalidate, the SDK and the services agree on it.
    assert (not rules.violations(operations_pb2.Rendition(name=name))) is ok
    assert bool(rules.RENDITION_NAME.fullmatch(name)) is ok


def test_every_operation_has_a_json_example_in_its_proto_comment() -> None:
    for name, op in rules.OPERATIONS.items():
        assert op.examples, name
        assert "Example:" not in op.description, name


def test_a_repeated_fields_item_rule_is_worded_as_the_items() -> None:
    """An item of `fractions` out of 0..1 once read "must be at most 10 items" (the list's rule)."""
    found = rules.violations(Op(video_frames=operations_pb2.VideoFrames(fractions=[0.5, 1.5])))
    assert [(v.field, v.description) for v in found] == [
        ("video_frames.fractions[1]", "must be between 0 and 1")
    ]
    found = rules.violations(Op(video_frames=operations_pb2.VideoFrames(fractions=[0.5] * 11)))
    assert [(v.field, v.description) for v in found] == [
        ("video_frames.fractions", "must have at most 10 items")
    ]


def test_a_bytes_fields_length_is_in_bytes() -> None:
    """The watermark's 256 KiB limit read "at most 262144 characters"."""
    image = rules.OPERATIONS["watermark"].field("image")
    assert image.constraint.startswith("at most 262144 bytes")
    found = rules.violations(
        Op(watermark=operations_pb2.Watermark(image=b"x" * 262145)), "operations[0]"
    )
    assert ("operations[0].watermark.image", "must have at most 262144 bytes") in [
        (v.field, v.description) for v in found
    ]


def test_empty_watermark_text_is_one_violation_not_two() -> None:
    """string.min_len and the not_blank rule both refuse "": the client hears it once."""
    found = rules.violations(operations_pb2.WatermarkText(text=""), "operations[0].watermark_text")
    assert [(v.field, v.description) for v in found] == [
        ("operations[0].watermark_text.text", "must have 1..256 characters, not only spaces")
    ]
    two = rules.violations(operations_pb2.Resize(width=0, height=0, dpr=9), "resize")
    assert [v.field for v in two] == ["resize", "resize.dpr"]  # other fields' are all kept
