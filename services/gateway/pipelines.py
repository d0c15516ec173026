"""Turn what a client asked for into the pipeline that runs: presets and `convert.auto`.

A preset is a named list of operations from the deployment's settings (PIXMESH_PRESETS); its
operations come first, then the request's own; but an `orient` that starts the request's
operations goes before the preset's, since it is only allowed as the first operation (it decides
whether the EXIF orientation is applied when the image is decoded). `convert.auto` picks the output format from the
client's Accept header (Envoy passes HTTP headers to the gateway as gRPC metadata) and is resolved
here, before the job is stored, so the job shows the concrete format; only where the input's
format decides and pixmesh cannot write it (BMP, ICO, HEIF) does `auto` stay for imaging, whose
one rule also knows whether a HEIF has alpha. Only explicit media types count: browsers that can show AVIF or WebP say so, while `*/*`
(curl, most libraries) promises nothing about formats.

A job's renditions get the same treatment: each rendition's preset (imaging operations only) is
expanded before its own operations, and `convert.auto` inside a rendition is resolved from the
same Accept header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from google.protobuf import json_format

from pixmesh import rules
from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import invalid
from services.runtime.pipeline import IMAGING, op_name, owner

Operation = operations_pb2.Operation
Rendition = operations_pb2.Rendition
Format: TypeAlias = image_pb2.ImageFormat.ValueType

PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# In order of preference; the fallback is the input's format when pixmesh can write it.
_AUTO_PREFERENCE = ((image_pb2.AVIF, "image/avif"), (image_pb2.WEBP, "image/webp"))
_WRITABLE: frozenset[Format] = frozenset(rules.OUTPUT_FORMATS)  # Convert.format's proto rule
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # an Accept weight (RFC 9110 12.4.2)


def parse_presets(raw: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[Operation]]:
    """Operation lists from their JSON form; ValueError names the preset and step at fault."""
    presets: dict[str, list[Operation]] = {}
    for name, steps in raw.items():
        if not PRESET_NAME.match(name):
            raise ValueError(f"preset {name!r}: names are 1..64 of a-z, 0-9, '_' and '-'")
        if not steps:
            raise ValueError(f"preset {name!r}: needs at least one operation")
        ops = []
        for i, step in enumerate(steps):
            try:
                op = json_format.ParseDict(dict(step), Operation())
            except json_format.ParseError as exc:
                raise ValueError(f"preset {name!r}, operation {i}: {exc}") from exc
            if op.WhichOneof("op") is None:
                raise ValueError(f"preset {name!r}, operation {i}: empty operation")
            ops.append(op)
        presets[name] = ops
    return presets


def expand(
    presets: Mapping[str, Sequence[Operation]],
    preset: str,
    ops: Sequence[Operation],
    field: str = "preset",
) -> list[Operation]:
    """The preset's operations, then `ops` (an `orient` leading `ops` first of all); `field`
    names the preset in an error."""
    if not preset:
        return list(ops)
    if preset not in presets:
        known = ", ".join(sorted(presets)) or "none are configured"
        raise invalid(field, f"unknown preset {preset!r} ({known})", "UNKNOWN_PRESET")
    lead = 1 if ops and ops[0].WhichOneof("op") == "orient" else 0
    return [*ops[:lead], *presets[preset], *ops[lead:]]


def expand_renditions(
    presets: Mapping[str, Sequence[Operation]], renditions: Sequence[Rendition]
) -> list[Rendition]:
    """Copies of `renditions` with each preset expanded (its operations first) and cleared.

    A rendition runs imaging operations only, so a preset holding another service's operation
    cannot be used in one; the error names the rendition's preset, not an operation the client
    never wrote."""
    out = []
    for i, rendition in enumerate(renditions):
        field = f"renditions[{i}].preset"
        ops = expand(presets, rendition.preset, rendition.operations, field)
        if rendition.preset:
            for j, op in enumerate(presets[rendition.preset]):
                if owner(op, j) != IMAGING:
                    raise invalid(
                        field,
                        f"preset {rendition.preset!r} runs {op_name(op, j)}, which cannot run in"
                        " a rendition (imaging operations only); use it as the job's preset",
                        "NOT_A_RENDITION_OPERATION",
                    )
        out.append(Rendition(name=rendition.name, operations=ops))
    return out


def accepted_formats(accept: str | None) -> frozenset[Format]:
    """The formats an Accept header names explicitly with a non-zero quality.

    A weight (RFC 9110 section 12.4.2) is 0 to 1 with at most three decimals, and q=0 means
    "not acceptable". A media range with any other weight (q=-1, q=2, q=0.0001, q=high) is
    dropped, as if the client had not named it: an unreadable header never picks a format, and
    the request is not refused for it."""
    found: set[Format] = set()
    for part in (accept or "").lower().split(","):
        media, *params = (p.strip() for p in part.split(";"))
        weights = [
            value.strip()
            for name, _, value in (p.partition("=") for p in params)
            if name.strip() == "q"
        ]
        if weights and not (_QVALUE.fullmatch(weights[0]) and float(weights[0]) > 0):
            continue
        found.update(fmt for fmt, mime in _AUTO_PREFERENCE if media == mime)
    return frozenset(found)


def auto_format(accepted: frozenset[Format], source: Format) -> Format | None:
    """AVIF or WEBP when accepted, else the input's format when pixmesh can write it; None
    leaves the choice to imaging's one rule for inputs it cannot write (encode.choose_format:
    BMP and ICO become PNG, a HEIF JPEG, or PNG when decoding finds alpha)."""
    for fmt, _ in _AUTO_PREFERENCE:
        if fmt in accepted:
            return fmt
    return source if source in _WRITABLE else None


def resolve_auto(
    ops: Sequence[Operation], accept: str | None, source: Format, prefix: str = ""
) -> list[Operation]:
    """A copy of `ops` with every `convert.auto` replaced by the format chosen from `accept`.
    `prefix` goes before `operations[i]` in an error (e.g. "renditions[0].")."""
    accepted = accepted_formats(accept)
    out = []
    for i, op in enumerate(ops):
        if op.WhichOneof("op") == "convert" and op.convert.auto:
            if op.convert.format != image_pb2.IMAGE_FORMAT_UNSPECIFIED:
                raise invalid(f"{prefix}operations[{i}].convert.format", "must be unset with auto")
            chosen = auto_format(accepted, source)
            if chosen is None:  # the worker decides, from the decoded input (see auto_format)
                out.append(op)
                continue
            resolved = Operation()
            resolved.CopyFrom(op)
            resolved.convert.auto = False
            resolved.convert.format = chosen
            op = resolved
        out.append(op)
    return out


def resolve_auto_renditions(
    renditions: Sequence[Rendition], accept: str | None, source: Format
) -> list[Rendition]:
    """`resolve_auto` inside each rendition (presets already expanded)."""
    return [
        Rendition(
            name=r.name,
            operations=resolve_auto(r.operations, accept, source, f"renditions[{i}]."),
            preset=r.preset,
        )
        for i, r in enumerate(renditions)
    ]
