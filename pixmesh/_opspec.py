"""Operations as the proto describes them: build any operation from keyword arguments, and read
its `NAME=ARGS` spelling, both driven by the message descriptors of the `Operation.op` oneof.

Nothing here names an operation. A field added to an operation's message, or a new operation in
the oneof, is buildable (`build("tint", color="#ff8800", strength=0.5)`) and parseable
(`tint=#ff8800,0.5`, `tint=strength:0.5`, or the REST JSON `tint={"color": "#ff8800"}`) without
a line here; its constraints are the proto's (see `pixmesh.rules`), checked on the built message.

The `ARGS` of the generic spelling are comma-separated tokens:
- `FIELD:VALUE` sets a field (a Gravity field takes an anchor name, `gravity:north`);
- the name of a bool field sets it (`enlarge`); the lower-case name of an enum value sets that
  enum field (`fill`), an anchor name the Gravity field (`north_east`);
- any other token fills the next unset field in declaration order: numbers the numeric fields,
  other text the string and bytes fields (`rotate=90,#ff0000`); an empty token skips one.
A bytes field given text reads that file (`watermark=logo.png`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pixmesh import rules
from pixmesh._buf_validate import validate_pb2
from pixmesh.common.v1 import operations_pb2
from pixmesh.common.v1.operations_pb2 import Operation

__all__ = [
    "OPERATIONS",
    "ArgumentError",
    "build",
    "choices",
    "fill",
    "parse_args",
    "positional",
    "usage",
]

# Operation oneof field name -> the message holding its parameters.
OPERATIONS: Mapping[str, Any] = {  # Descriptor
    field.name: field.message_type for field in Operation.DESCRIPTOR.oneofs_by_name["op"].fields
}

# SDK spellings accepted beside the lower-case enum value names, per enum type.
_ALIASES: Mapping[str, Mapping[str, str]] = {
    "pixmesh.common.v1.ImageFormat": {"jpg": "jpeg", "tif": "tiff", "heic": "heif"},
}
_GRAVITY = operations_pb2.Gravity.DESCRIPTOR
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_UNSIGNED = frozenset(
    {
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})
_TEXTS = frozenset({FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES})
_KEYWORD = re.compile(r"[A-Za-z_]+")
# The standard rules' ids start with their FieldRules type ("uint32.lte", "repeated.min_items").
_STANDARD = frozenset(
    f.name for f in validate_pb2.FieldRules.DESCRIPTOR.oneofs_by_name["type"].fields
)
_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})


class ArgumentError(ValueError):
    """A bad argument; `field` is its path in the operation's message ("" for the message)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def build(name: str, values: Mapping[str, object], *, check: bool = True) -> Operation:
    """The Operation `name` with `values` (field name -> Python value; None leaves it unset),
    checked against the proto's rules unless `check` is False."""
    try:
        descriptor = OPERATIONS[name]
    except KeyError:
        raise ArgumentError(f"unknown operation {name!r}") from None
    op = Operation()
    params = getattr(op, name)
    params.SetInParent()
    fill(params, values, name)
    if check:
        _check(op, name)
    assert params.DESCRIPTOR is descriptor
    return op


def fill(msg: Message, values: Mapping[str, object], label: str, path: str = "") -> None:
    """Set `msg`'s fields from `values`, converting each Python value as the field's type says;
    `label` names the message in errors ("resize", "resize gravity")."""
    fields = msg.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        field = fields.get(key)
        if field is None:
            known = ", ".join(fields)
            raise ArgumentError(f"{label} has no field {key!r}; its fields: {known}", path)
        if value is not None:
            _set(msg, field, value, f"{label} {key}", f"{path}{key}")


def choices(enum: Any) -> dict[str, int]:  # an EnumDescriptor
    """Lower-case spellings of an enum's values (the zero value excluded) and their numbers."""
    names = {value.name.lower(): value.number for value in enum.values if value.number != 0}
    for alias, target in _ALIASES.get(enum.full_name, {}).items():
        names[alias] = names[target]
    return names


def _names(enum: Any) -> list[str]:
    """An enum's values as the SDK spells them, without the aliases."""
    return [name for name in choices(enum) if name not in _ALIASES.get(enum.full_name, {})]


def positional(descriptor: Descriptor) -> list[FieldDescriptor]:
    """The fields a bare token can fill, in declaration order: numbers, strings and bytes."""
    return [
        field
        for field in descriptor.fields
        if not field.is_repeated and (field.type in _INTEGERS | _FLOATS | _TEXTS)
    ]


def usage(name: str) -> str:
    """How `name`'s arguments are spelled, e.g. "tint[=COLOR[,STRENGTH]]  (color:TEXT, ...)"."""
    descriptor = OPERATIONS[name]
    if not descriptor.fields:
        return name
    slots = positional(descriptor)
    return f"{name}[={_slots(slots)}]  ({keywords(descriptor)})" if slots else name


def _slots(slots: Sequence[FieldDescriptor]) -> str:
    """E.g. "SIGMA[,AMOUNT[,THRESHOLD]]"."""
    first, *rest = [slot.name.upper() for slot in slots]
    return first + "".join(f"[,{slot}" for slot in rest) + "]" * len(rest)


def keywords(descriptor: Descriptor) -> str:
    return ", ".join(_keyword(field) for field in descriptor.fields)


def parse_args(name: str, args: str) -> tuple[dict[str, object], Message | None]:
    """Read `args` for operation `name`: (field name -> value, None), or for a JSON object the
    parsed parameters message ({}, message). Values are typed, not yet range-checked."""
    descriptor = OPERATIONS[name]
    text = args.strip()
    if text.startswith("{"):
        params = getattr(Operation(), name)
        try:
            json_format.Parse(text, params)
        except json_format.ParseError as exc:
            raise ArgumentError(f"{name} JSON: {exc}") from None
        return {}, params
    if not descriptor.fields:
        if text:
            raise ArgumentError(f"{name} takes no arguments")
        return {}, None
    values: dict[str, object] = {}
    slots = positional(descriptor)
    cursor = 0
    for token in (t.strip() for t in text.split(",")) if text else ():
        if not token:
            cursor += 1
            continue
        field = _named(descriptor, token, values)
        if field is not None:
            if ":" in token:
                value = _token_value(field, token.partition(":")[2], name)
            else:  # a bool field's name, or an enum value's
                value = True if field.type == FieldDescriptor.TYPE_BOOL else token
        elif (field := _choice_field(descriptor, token, values, slots)) is not None:
            value = token  # not one of the enum's values: its conversion says which are
        else:
            numeric = _is_number(token)
            keyword = ":" in token and _KEYWORD.fullmatch(token.partition(":")[0].strip())
            texts = any(slot.type in _TEXTS for slot in slots)
            if not keyword and not numeric and not texts and not _has_words(descriptor):
                numeric = True  # a misspelt number ("blur=big"): the number's error says so
            if keyword or not any((slot.type in _TEXTS) != numeric for slot in slots):
                raise ArgumentError(_unknown(name, token, descriptor))
            while cursor < len(slots) and (
                slots[cursor].name in values or (slots[cursor].type in _TEXTS) == numeric
            ):
                cursor += 1
            if cursor == len(slots):
                raise ArgumentError(f"{name} takes {_slots(slots)}")
            field = slots[cursor]
            cursor += 1
            value = _from_text(field, token, f"{name} {field.name}")
        if field.name in values:
            raise ArgumentError(f"{name} {field.name} is given twice", field.name)
        values[field.name] = value
    return values, None


def _check(op: Operation, name: str) -> None:
    """Raise ArgumentError for the first rule of the proto that `op` breaks (pixmesh.rules)."""
    found = rules.violations(op)
    if not found:
        return
    first = found[0]
    field, target, value = _resolve(op, first.field)
    text = first.description
    if target is not None and first.rule.split(".", 1)[0] in _STANDARD:
        text = _explain(target, value) or text
        if target.is_repeated:  # "redact needs 1..64 regions, not 0": the count is the subject
            raise ArgumentError(f"{name} {text}", field)
    words = [name, *(_words(part) for part in field.split(".") if part)]
    if target is not None and target.containing_type is _GRAVITY and target.name == "anchor":
        words.pop()  # a Gravity is given as its anchor: "watermark position must be one of ..."
    raise ArgumentError(f"{' '.join(words)} {text}", field)


def _resolve(op: Message, path: str) -> tuple[str, Any, object]:
    """Path "redact.regions[0].width" -> ("regions[0].width", its descriptor, its value)."""
    value: Any = op
    target: Any = None
    parts = path.split(".")
    for part in parts:
        key, _, index = part.partition("[")
        if not isinstance(value, Message) or key not in value.DESCRIPTOR.fields_by_name:
            return ".".join(parts[1:]), None, None
        target = value.DESCRIPTOR.fields_by_name[key]
        value = getattr(value, key)
        if index:
            value = value[int(index.rstrip("]"))]
            target = None if target.message_type is None else target
    return ".".join(parts[1:]), target, value


def _words(part: str) -> str:
    """ "regions[0]" -> "region 0", as the SDK's messages name a list's items."""
    key, _, index = part.partition("[")
    return f"{key.removesuffix('s')} {index.rstrip(']')}" if index else key


def range_text(field: FieldDescriptor) -> str:
    """A numeric, length or count rule of `field` in the SDK's words ("0..100", ">= 1",
    "within 0.1..100"); "" when it has none."""
    rules_ = field.GetOptions().Extensions[validate_pb2.field]
    kind = rules_.WhichOneof("type")
    if kind is None or kind == "enum":
        return ""
    typed = rules_.repeated if field.is_repeated and kind == "repeated" else getattr(rules_, kind)
    have = {f.name for f, _ in typed.ListFields()}
    if kind in ("repeated", "string", "bytes"):
        least, most = ("min_items", "max_items") if kind == "repeated" else ("min_len", "max_len")
        unit = {"repeated": field.name, "string": "characters", "bytes": "bytes"}[kind]
        if least in have and most in have:
            return f"{getattr(typed, least)}..{getattr(typed, most)} {unit}"
        if most in have:
            return f"at most {getattr(typed, most)} {unit}"
        return f"at least {getattr(typed, least)} {unit}" if least in have else ""
    low: Any = typed.gte if "gte" in have else typed.gt if "gt" in have else None
    high: Any = typed.lte if "lte" in have else typed.lt if "lt" in have else None
    if field.type in _UNSIGNED and low is None and high is not None:
        low = 0
    if low is None and high is None:
        return ""
    if field.type in _FLOATS:
        span = f"{low:g}..{high:g}" if low is not None and high is not None else ""
        text = f"within {span}" if span else (f">= {low:g}" if low is not None else f"<= {high:g}")
        exclusive = [f"{'above' if k == 'gt' else 'below'} {getattr(typed, k):g}"
                     for k in ("gt", "lt") if k in have]  # fmt: skip
        return ", ".join([text, *exclusive])
    if high is None:
        return f">= {low}"
    return f"{low}..{high}" if low is not None else f"<= {high}"


def _explain(field: FieldDescriptor, value: object) -> str:
    """What a standard rule of `field` asks, with the value given: "must be 0..100, not 101"."""
    text = range_text(field)
    if not text:
        return ""
    if field.is_repeated:
        return f"needs {text}, not {len(value)}" if isinstance(value, Sized) else f"needs {text}"
    if field.type in _TEXTS:
        return f"must be {text}"
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"must be {text}, not {shown}"


# --- values -------------------------------------------------------------------------------


def _set(msg: Message, field: Any, value: object, label: str, path: str) -> None:
    if field.is_repeated:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise ArgumentError(f"{label} must be a list, not {value!r}", path)
        items = list(value)
        target: Any = getattr(msg, field.name)
        item_label = label.removesuffix("s")
        for i, item in enumerate(items):
            if field.message_type is not None:
                _message(target.add(), item, f"{item_label} {i}", f"{path}[{i}].")
            else:
                target.append(_scalar(field, item, f"{item_label} {i}", f"{path}[{i}]"))
    elif field.message_type is not None:
        _message(getattr(msg, field.name), value, label, f"{path}.")
    else:
        setattr(msg, field.name, _scalar(field, value, label, path))


def _message(target: Message, value: object, label: str, path: str) -> None:
    """A message field from the same message, a mapping of its fields, a tuple of them in order,
    or (Gravity) an anchor name or a focus point (x, y)."""
    if isinstance(value, Message):
        if value.DESCRIPTOR is not target.DESCRIPTOR:
            raise ArgumentError(f"{label} must be a {target.DESCRIPTOR.name}", path.rstrip("."))
        target.CopyFrom(value)
    elif target.DESCRIPTOR is _GRAVITY and isinstance(value, str):
        anchor = target.DESCRIPTOR.fields_by_name["anchor"]
        setattr(target, "anchor", _enum(anchor.enum_type, value, label, f"{path}anchor"))  # noqa: B010
    elif target.DESCRIPTOR is _GRAVITY and isinstance(value, tuple) and len(value) == 2:
        x, y = value
        fill(target, {"anchor": "focus_point", "x": x, "y": y}, label, path)
    elif isinstance(value, Mapping):
        fill(target, value, label, path)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        fields = target.DESCRIPTOR.fields
        if len(value) != len(fields):
            names = ", ".join(f.name for f in fields)
            raise ArgumentError(f"{label} must be ({names})", path.rstrip("."))
        fill(target, dict(zip((f.name for f in fields), value, strict=True)), label, path)
    else:
        raise ArgumentError(f"{label} must be a {target.DESCRIPTOR.name}, not {value!r}")
    target.SetInParent()


def _scalar(field: FieldDescriptor, value: object, label: str, path: str) -> object:
    kind = field.type
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum(field.enum_type, value, label, path)
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise ArgumentError(f"{label} must be True or False, not {value!r}", path)
        return value
    if kind in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(f"{label} must be an integer, not {value!r}", path)
        if kind in _UNSIGNED and value < 0:
            raise ArgumentError(f"{label} must be {range_text(field) or '>= 0'}, not {value}", path)
        return value
    if kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgumentError(f"{label} must be a number, not {value!r}", path)
        return float(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str | os.PathLike):
            return Path(value).read_bytes()
        raise ArgumentError(f"{label} must be bytes or a file path, not {value!r}", path)
    if not isinstance(value, str):
        raise ArgumentError(f"{label} must be a string, not {value!r}", path)
    return value


def _enum(enum: Any, value: object, label: str, path: str) -> int:  # an EnumDescriptor
    options = choices(enum)
    if isinstance(value, int) and not isinstance(value, bool) and value in options.values():
        return value
    if isinstance(value, str) and value.strip().lower() in options:
        return options[value.strip().lower()]
    named = ", ".join(_names(enum))
    raise ArgumentError(f"{label} must be one of {named}, not {value!r}", path)


def _from_text(field: FieldDescriptor, text: str, label: str) -> object:
    """A token's text as the Python value `_scalar` expects for `field`."""
    text = text.strip()
    kind = field.type
    if kind == FieldDescriptor.TYPE_BOOL:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ArgumentError(f"{label} must be true or false, not {text!r}", field.name)
    if kind in _INTEGERS:
        try:
            return int(text)
        except ValueError:
            raise ArgumentError(
                f"{label} must be a whole number, not {text!r}", field.name
            ) from None
    if kind in _FLOATS:
        try:
            return float(text)
        except ValueError:
            raise ArgumentError(f"{label} must be a number, not {text!r}", field.name) from None
    return text


def _token_value(field: FieldDescriptor, text: str, name: str) -> object:
    if field.message_type is not None or field.type == FieldDescriptor.TYPE_ENUM:
        return text.strip()  # an anchor or enum name, converted by _set
    return _from_text(field, text, f"{name} {field.name}")


def _named(descriptor: Descriptor, token: str, values: Mapping[str, object]) -> Any:
    """The field a token names: `FIELD:VALUE`, a bool field's name, an enum value's or an
    anchor's name; None for a positional value."""
    key, sep, _ = token.partition(":")
    fields = descriptor.fields_by_name
    if sep and key.strip().lower() in fields:
        return fields[key.strip().lower()]
    lowered = token.lower()
    if lowered in fields and fields[lowered].type == FieldDescriptor.TYPE_BOOL:
        return fields[lowered]
    for field in descriptor.fields:
        if field.is_repeated or field.name in values:
            continue
        if field.type == FieldDescriptor.TYPE_ENUM and lowered in choices(field.enum_type):
            return field
        if field.message_type is _GRAVITY and lowered in choices(
            _GRAVITY.fields_by_name["anchor"].enum_type
        ):
            return field
    return None


def _choice_field(
    descriptor: Descriptor, token: str, values: Mapping[str, object], slots: Sequence[Any]
) -> Any:
    """The field a word that names nothing is meant for, when there is exactly one: the only
    enum (or Gravity) field of an operation without text fields (`flip=diagonal`)."""
    if ":" in token or _is_number(token) or any(slot.type in _TEXTS for slot in slots):
        return None
    candidates = [
        field
        for field in descriptor.fields
        if not field.is_repeated
        and (field.type == FieldDescriptor.TYPE_ENUM or field.message_type is _GRAVITY)
    ]
    if len(candidates) == 1 and candidates[0].name not in values:
        return candidates[0]
    return None


def _has_words(descriptor: Descriptor) -> bool:
    """Whether some bare word means something to the operation (a bool, enum or Gravity)."""
    return any(
        field.type in (FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM)
        or field.message_type is _GRAVITY
        for field in descriptor.fields
    )


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _keyword(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return field.name
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "|".join(_names(field.enum_type))
    if field.message_type is _GRAVITY:
        return f"{field.name}:ANCHOR"
    if field.is_repeated or field.message_type is not None:
        return f"{field.name} (JSON only)"
    if field.type in _INTEGERS | _FLOATS:
        return f"{field.name}:N"
    return f"{field.name}:TEXT"


def _unknown(name: str, token: str, descriptor: Descriptor) -> str:
    return f"unknown {name} flag {token!r}; {name} takes {keywords(descriptor)}"
