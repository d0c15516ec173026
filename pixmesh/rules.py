"""The operations' rules, read from the proto: one place that checks and describes them.

Every rule of an operation is a `buf.validate` annotation in protos/pixmesh/common/v1/
operations.proto, and every field's description is its comment there. This module is the only
reader of both: the SDK builders, the CLI's NAME=ARGS parser, the gateway, imaging and
ListOperations all go through it, so a rule is written once.

API
- `violations(message, path="") -> list[Violation]`: every rule `message` breaks, checked by
  protovalidate, each as a field path (prefixed with `path`, e.g. "operations[2]" gives
  "operations[2].rotate.angle") and a client-safe description in the project's wording ("must be
  between -360 and 360"). A message-level CEL rule whose id starts with a field name
  ("width.required") is reported on that field.
- `check(message, path="")`: raises `RuleViolation` (a `pixmesh.errors.InvalidArgument`, reason
  INVALID_ARGUMENT, `violations` = `pixmesh.errors.FieldViolation`s) when there is any.
- `OPERATIONS`: name (the `Operation.op` oneof field) -> `OperationRules` (message class,
  description, `fields`: `FieldRule`s with name, type, description, constraint text and the
  `buf.validate.FieldRules` themselves), in the oneof's order.
- `operation_info(name, service)`: the ListOperations entry (`OperationInfo`) of an operation.
- `OUTPUT_FORMATS`: the formats `Convert.format` accepts (its `enum.in` rule).
- `RENDITION_NAME`: the pattern of a client-named rendition (`Rendition.name`'s rule).
- `OperationRules.examples`: the `Example: ` lines of the message comment (README's table).
- `describe_field(descriptor, name)` / `describe_message(descriptor)`: a comment from the proto;
  `field_rules(field)`, `message_cel(message)`, `no_rule(message, name)`: the rules themselves, for
  messages nested in operations (Gravity, Region) too.

Descriptions come from pixmesh/common/v1/operations.binpb (operations.proto with its source
info, written by `make proto`): generated _pb2 modules carry no comments.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import protovalidate
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pixmesh._buf_validate import validate_pb2
from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.errors import FieldViolation, InvalidArgument

__all__ = [
    "OPERATIONS",
    "OUTPUT_FORMATS",
    "RENDITION_NAME",
    "FieldRule",
    "OperationRules",
    "RuleViolation",
    "Violation",
    "check",
    "describe_field",
    "describe_message",
    "field_rules",
    "message_cel",
    "message_examples",
    "no_rule",
    "operation_info",
    "violations",
]

# The comment that marks a field whose limit is not a proto rule (a deployment setting, or a
# check that needs the image): the text after it says what the limit is and who checks it.
NO_RULE = "No rule here:"


@dataclass(frozen=True)
class Violation:
    field: str  # e.g. "operations[0].rotate.angle"
    description: str  # e.g. "must be between -360 and 360"
    rule: str  # the buf.validate rule id, e.g. "double.gte_lte" or "width.required"


class RuleViolation(InvalidArgument):
    """A message breaks its proto rules; `violations` names every field at fault."""


@dataclass(frozen=True)
class FieldRule:
    name: str
    type: str  # as ListOperations shows it: "uint32", "pixmesh.common.v1.Resize.Mode", ...
    description: str
    constraint: str  # human-readable, e.g. "-360..360"; never empty
    rules: Any  # buf.validate.FieldRules (empty when the field has none)
    descriptor: FieldDescriptor

    @property
    def constrained(self) -> bool:
        """Whether a buf.validate rule (field- or message-level) constrains the field."""
        return bool(self.rules.ByteSize())


@dataclass(frozen=True)
class OperationRules:
    name: str  # the Operation.op oneof field, e.g. "resize"
    message: type[Message]
    description: str
    fields: tuple[FieldRule, ...]
    # Message-level CEL rules: (id, message) pairs; the id's first part may name a field.
    cel: tuple[tuple[str, str], ...]
    # The message comment's `Example: ` lines, each the JSON of one Operation (for the docs).
    examples: tuple[str, ...] = ()

    def field(self, name: str) -> FieldRule:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)


_validator = protovalidate.Validator()


def violations(message: Message, path: str = "") -> list[Violation]:
    """Every rule `message` breaks, with field paths below `path`."""
    found = []
    for v in _validator.collect_violations(message):
        proto = v.proto
        field, descriptor = _field_path(
            message.DESCRIPTOR, proto.field.elements if proto.field else ()
        )
        rule = proto.rule_id or ""
        head = rule.split(".", 1)[0]
        target = descriptor.message_type if isinstance(descriptor, FieldDescriptor) else descriptor
        standard = _is_standard(rule)
        if not standard and "." in rule and target is not None and head in target.fields_by_name:
            # A CEL rule of a message (or of a message-typed field) that blames one of its fields.
            field = f"{field}.{head}" if field else head
            descriptor = target.fields_by_name[head]
        description = proto.message or rule
        if isinstance(descriptor, FieldDescriptor) and standard:
            description = _standard_message(descriptor, rule) or description
        full = ".".join(p for p in (path, field) if p)
        found.append(Violation(full, description, rule))
    return [v for v in found if not any(_repeats(v, w) for w in found)]


def _repeats(v: Violation, w: Violation) -> bool:
    """Whether `w` already says what `v` says about the same field: a standard rule and a CEL
    rule can both refuse one value (an empty watermark text breaks string.min_len, "must have
    1..256 characters", and not_blank, "must have 1..256 characters, not only spaces")."""
    return (
        v is not w
        and v.field == w.field
        and w.description.startswith(v.description)
        and len(w.description) > len(v.description)
    )


def check(message: Message, path: str = "") -> None:
    """Raise RuleViolation listing every rule `message` breaks."""
    found = violations(message, path)
    if found:
        raise RuleViolation(
            "; ".join(f"{v.field}: {v.description}" for v in found),
            reason="INVALID_ARGUMENT",
            violations=[FieldViolation(v.field, v.description) for v in found],
        )


def _field_path(root: Any, elements: Sequence[Any]) -> tuple[str, Any]:
    """The dotted path of protovalidate's field path, and the descriptor it ends on."""
    parts: list[str] = []
    current: Any = root
    for element in elements:
        name = element.field_name
        subscript = element.subscript
        if subscript is not None:
            key = subscript.value
            name += f"[{key}]" if not isinstance(key, str) else f"[{key!r}]"
        parts.append(name)
        message = current.message_type if isinstance(current, FieldDescriptor) else current
        if message is not None and element.field_name in message.fields_by_name:
            current = message.fields_by_name[element.field_name]
            if subscript is not None or not current.is_repeated:
                continue
    if isinstance(current, FieldDescriptor) and current.is_repeated and elements:
        last = elements[-1]
        if last.subscript is not None:
            # Into a repeated field's element: a message element's CEL rules apply to its type.
            return ".".join(parts), current.message_type or current
    return ".".join(parts), current


# Standard rules' ids start with their FieldRules type ("double.gte_lte", "enum.in"); CEL rules'
# ids in operations.proto never do, and their message is already the description.
_STANDARD = frozenset(
    f.name for f in validate_pb2.FieldRules.DESCRIPTOR.oneofs_by_name["type"].fields
)


def _is_standard(rule: str) -> bool:
    return rule == "required" or rule.split(".", 1)[0] in _STANDARD


def _standard_message(descriptor: FieldDescriptor, rule: str) -> str:
    """The project's wording for a standard rule ("must be between 0 and 1")."""
    if rule == "required":
        return "is required"
    own = field_rules(descriptor)
    if own.WhichOneof("type") == "repeated" and not rule.startswith("repeated."):
        # A rule of the list's items ("fractions[1]": "double.gte_lte"), not of the list.
        phrase = _phrase(descriptor, rules=own.repeated.items)
    else:
        phrase = _phrase(descriptor)
    if not phrase:
        return ""
    if rule.startswith(("repeated.", "string.", "bytes.")):
        return f"must have {phrase}"
    return f"must be {phrase}"


# -- descriptions -----------------------------------------------------------------------------


@functools.cache
def _comments() -> Mapping[str, str]:
    """Full name ("pixmesh.common.v1.Rotate", "pixmesh.common.v1.Rotate.angle") -> comment."""
    data = importlib.resources.files("pixmesh.common.v1").joinpath("operations.binpb").read_bytes()
    (file,) = (
        f
        for f in descriptor_pb2.FileDescriptorSet.FromString(data).file
        if f.name == operations_pb2.DESCRIPTOR.name
    )
    by_path = {tuple(loc.path): loc for loc in file.source_code_info.location}
    out: dict[str, str] = {}
    _walk(out, by_path, file.message_type, file.package, (4,))
    return out


def _walk(
    out: dict[str, str],
    by_path: Mapping[tuple[int, ...], descriptor_pb2.SourceCodeInfo.Location],
    messages: Sequence[descriptor_pb2.DescriptorProto],
    prefix: str,
    path: tuple[int, ...],
) -> None:
    """Collect the comments of `messages` (at source-info `path`), their fields, their enums'
    values and their nested messages."""
    for i, msg in enumerate(messages):
        name = f"{prefix}.{msg.name}"
        here = (*path, i)
        out[name] = _text(by_path.get(here))
        for j, fld in enumerate(msg.field):
            out[f"{name}.{fld.name}"] = _text(by_path.get((*here, 2, j)))
        for j, enum in enumerate(msg.enum_type):
            for k, value in enumerate(enum.value):
                out[f"{name}.{enum.name}.{value.name}"] = _text(by_path.get((*here, 4, j, 2, k)))
        _walk(out, by_path, msg.nested_type, name, (*here, 3))


def _text(location: descriptor_pb2.SourceCodeInfo.Location | None) -> str:
    if location is None:
        return ""
    raw = location.leading_comments or location.trailing_comments
    return " ".join(line.strip() for line in raw.strip().splitlines())


# An example in a message comment: "Example: `{...}`" (the JSON of one Operation).
_EXAMPLE = re.compile(r"\s*Example: `(\{.*?\})`")


def describe_message(descriptor: Descriptor) -> str:
    """The comment above a message of operations.proto, without its examples ("" when it has
    none)."""
    return _EXAMPLE.sub("", _comments().get(descriptor.full_name, "")).strip()


def message_examples(descriptor: Descriptor) -> tuple[str, ...]:
    """The JSON examples (`Example: ` lines) of a message's comment, in order."""
    return tuple(_EXAMPLE.findall(_comments().get(descriptor.full_name, "")))


def describe_field(descriptor: Descriptor, name: str) -> str:
    """The comment of field `name` of a message of operations.proto, without the "No rule
    here" part (see `FieldRule.constraint`)."""
    text = _comments().get(f"{descriptor.full_name}.{name}", "")
    return text.split(NO_RULE, 1)[0].strip()


def no_rule(descriptor: Descriptor, name: str) -> str:
    """What the "No rule here:" comment of a field says its limit is ("" when it has none)."""
    text = _comments().get(f"{descriptor.full_name}.{name}", "")
    return text.split(NO_RULE, 1)[1].strip() if NO_RULE in text else ""


# -- constraints ------------------------------------------------------------------------------


def field_rules(descriptor: FieldDescriptor) -> Any:
    """The field's buf.validate.FieldRules (empty when it has none)."""
    return descriptor.GetOptions().Extensions[validate_pb2.field]


def _num(value: float) -> str:
    return f"{value:g}"


def _phrase(descriptor: FieldDescriptor, compact: bool = False, rules: Any = None) -> str:
    """A field's standard rules in words: "between 0 and 1", "at most 100", "1..64 items"...
    `compact` writes a closed range as ListOperations always has: "0..1". `rules`: other rules
    than the field's own (its items' when it is repeated)."""
    rules = field_rules(descriptor) if rules is None else rules
    kind = rules.WhichOneof("type")
    if kind is None:
        return ""
    typed = getattr(rules, kind)
    if kind == "enum":
        enum = descriptor.enum_type
        assert enum is not None
        allowed = list(typed.__getattribute__("in")) or [
            v.number for v in enum.values if v.number != 0 or not typed.defined_only
        ]
        names = [enum.values_by_number[n].name for n in allowed if n in enum.values_by_number]
        return "one of " + ", ".join(names)
    if kind == "repeated":
        return _range(typed, "min_items", "max_items") + " items"
    if kind in ("string", "bytes"):
        span = _range(typed, "min_len", "max_len")
        return f"{span} {'bytes' if kind == 'bytes' else 'characters'}" if span else ""
    fields = {f.name for f, _ in typed.ListFields()}
    lo = "gte" if "gte" in fields else "gt" if "gt" in fields else None
    hi = "lte" if "lte" in fields else "lt" if "lt" in fields else None
    if lo == "gte" and hi == "lte":
        if compact:
            return f"{_num(typed.gte)}..{_num(typed.lte)}"
        return f"between {_num(typed.gte)} and {_num(typed.lte)}"
    if lo and hi:
        left = "[" if lo == "gte" else "("
        right = "]" if hi == "lte" else ")"
        return f"in {left}{_num(getattr(typed, lo))}, {_num(getattr(typed, hi))}{right}"
    if hi == "lte" and kind in ("uint32", "uint64", "fixed32", "fixed64"):
        # An unsigned field's floor is 0.
        return f"0..{_num(typed.lte)}" if compact else f"between 0 and {_num(typed.lte)}"
    if hi:
        return f"at most {_num(typed.lte)}" if hi == "lte" else f"below {_num(typed.lt)}"
    if lo:
        return f"at least {_num(typed.gte)}" if lo == "gte" else f"above {_num(typed.gt)}"
    return ""


def _range(typed: Any, low: str, high: str) -> str:
    has = {f.name for f, _ in typed.ListFields()}
    if low in has and high in has:
        return f"{getattr(typed, low)}..{getattr(typed, high)}"
    if high in has:
        return f"at most {getattr(typed, high)}"
    if low in has:
        return f"at least {getattr(typed, low)}"
    return ""


def _constraint(message: Descriptor, field: FieldDescriptor, cel: Sequence[tuple[str, str]]) -> str:
    """ListOperations' constraint text of a field: its standard rules, its CEL rules' messages,
    the message-level rules that name it, or what its "No rule here" comment says."""
    rules = field_rules(field)
    parts = []
    phrase = _phrase(field, compact=True)
    if phrase:
        if rules.ignore == validate_pb2.IGNORE_IF_ZERO_VALUE:
            phrase += ", or 0"
        parts.append(phrase)
    parts += [r.message.removeprefix("must be ") for r in rules.cel if r.message]
    parts += [text for rule_id, text in cel if rule_id.split(".", 1)[0] == field.name and text]
    if not parts:
        parts.append(no_rule(message, field.name))
    if not any(parts):
        if field.type == FieldDescriptor.TYPE_BOOL:
            return "true or false"
        if field.message_type is not None:
            return f"a {field.message_type.name}"
        return "any"
    return "; ".join(p for p in parts if p)


_SCALAR_TYPES = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def type_name(field: FieldDescriptor) -> str:
    """The proto type of a field as ListOperations shows it."""
    if field.enum_type is not None:
        name = str(field.enum_type.full_name)
    elif field.message_type is not None:
        name = str(field.message_type.full_name)
    else:
        name = _SCALAR_TYPES[field.type]
    return f"repeated {name}" if field.is_repeated else name


def message_cel(descriptor: Descriptor) -> tuple[tuple[str, str], ...]:
    """A message's own CEL rules as (id, message); an id's first part may name a field."""
    options = descriptor.GetOptions().Extensions[validate_pb2.message]
    return tuple((r.id, r.message) for r in options.cel)


def _operation(field: FieldDescriptor) -> OperationRules:
    message = field.message_type
    assert message is not None  # every member of Operation.op is a message
    cel = message_cel(message)
    return OperationRules(
        name=field.name,
        message=message_factory.GetMessageClass(message),
        description=describe_message(message),
        fields=tuple(
            FieldRule(
                name=f.name,
                type=type_name(f),
                description=describe_field(message, f.name),
                constraint=_constraint(message, f, cel),
                rules=field_rules(f),
                descriptor=f,
            )
            for f in message.fields
        ),
        cel=cel,
        examples=message_examples(message),
    )


OPERATIONS: Mapping[str, OperationRules] = {
    f.name: _operation(f) for f in operations_pb2.Operation.DESCRIPTOR.oneofs_by_name["op"].fields
}


# A rendition's name: Rendition.name's pattern rule, read once for the SDK and the services
# (`RENDITION_NAME.fullmatch(name)`). It holds for the renditions a client names; a plain job's
# one output is an unnamed rendition inside the services and is never checked against it.
RENDITION_NAME: re.Pattern[str] = re.compile(
    field_rules(operations_pb2.Rendition.DESCRIPTOR.fields_by_name["name"]).string.pattern
)


def operation_info(name: str, service: str) -> operations_pb2.OperationInfo:
    """The ListOperations entry of operation `name`, run by `service`."""
    op = OPERATIONS[name]
    return operations_pb2.OperationInfo(
        name=name,
        service=service,
        description=op.description,
        available=True,
        parameters=[
            operations_pb2.ParameterInfo(
                name=f.name, type=f.type, description=f.description, constraint=f.constraint
            )
            for f in op.fields
        ],
    )


def _output_formats() -> tuple[int, ...]:
    rules = field_rules(operations_pb2.Convert.DESCRIPTOR.fields_by_name["format"])
    return tuple(rules.enum.__getattribute__("in"))


# The formats pixmesh can write (Convert.format's rule); AVIF where the encoder is installed.
OUTPUT_FORMATS: tuple[image_pb2.ImageFormat.ValueType, ...] = tuple(
    image_pb2.ImageFormat.ValueType(f) for f in _output_formats()
)
