"""Checks a CreateJob pipeline before any work is queued.

The gateway rejects what is wrong on its face (empty or unknown ops, sizes over the limits,
formats we cannot write, ops whose service says they are unavailable); the workers validate
again against the real image when they run, so nothing here is the last line of defence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.gateway import errors
from services.runtime.errors import FieldViolation, InvalidArgument
from services.runtime.pipeline import op_name

_BOTH_SIDES = frozenset(
    {
        operations_pb2.Resize.FILL,
        operations_pb2.Resize.FILL_DOWN,
        operations_pb2.Resize.FORCE,
        operations_pb2.Resize.AUTO,
    }
)
OUTPUT_FORMATS = frozenset(
    {image_pb2.JPEG, image_pb2.PNG, image_pb2.WEBP, image_pb2.AVIF, image_pb2.GIF, image_pb2.TIFF}
)


def validate_pipeline(
    ops: Sequence[operations_pb2.Operation],
    *,
    max_operations: int,
    max_dimension: int,
    unavailable: Mapping[str, str],
) -> None:
    """Raise InvalidArgument listing every violation, or FailedPrecondition for an op that
    exists but cannot run here (`unavailable` maps op name -> reason)."""
    if not ops:
        raise InvalidArgument(
            message="operations: at least one operation is required",
            violations=(FieldViolation("operations", "at least one operation is required"),),
        )
    if len(ops) > max_operations:
        raise InvalidArgument(
            message=f"operations: at most {max_operations} operations per job",
            reason="TOO_MANY_OPERATIONS",
            violations=(FieldViolation("operations", f"at most {max_operations}"),),
        )
    violations: list[FieldViolation] = []
    for i, op in enumerate(ops):
        name = op_name(op, i)
        if name in unavailable:
            raise errors.operation_unavailable(i, name, unavailable[name])
        for field, problem in _check(op, max_dimension):
            violations.append(FieldViolation(f"operations[{i}].{name}.{field}", problem))
    if violations:
        raise InvalidArgument(
            message="; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=tuple(violations),
        )


def _check(op: operations_pb2.Operation, max_dim: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    which = op.WhichOneof("op")
    if which == "resize":
        r = op.resize
        if r.width == 0 and r.height == 0:
            out.append(("width", "width or height is required"))
        if r.mode in _BOTH_SIDES and not (r.width and r.height):
            out.append(("height", "FILL, FILL_DOWN, FORCE and AUTO need both width and height"))
        dpr = r.dpr or 1.0  # sizes are in CSS pixels: the output is dpr times larger
        out += _dims(("width", r.width * dpr), ("height", r.height * dpr), max_dim=max_dim)
    elif which == "crop":
        c = op.crop
        if c.width == 0 or c.height == 0:
            out.append(("width", "width and height must be positive"))
        out += _dims(("width", c.width), ("height", c.height), max_dim=max_dim)
    elif which == "rotate":
        if not -360.0 <= op.rotate.angle <= 360.0:
            out.append(("angle", "must be within -360..360"))
    elif which == "convert":
        if op.convert.format not in OUTPUT_FORMATS:
            out.append(("format", "must be one of JPEG, PNG, WEBP, AVIF, GIF, TIFF"))
        if op.convert.quality > 100:
            out.append(("quality", "must be within 1..100 (0 = format default)"))
    elif which == "denoise" and not 0.0 <= op.denoise.sigma <= 255.0:
        out.append(("sigma", "must be within 0..255"))
    return out


def _dims(*pairs: tuple[str, float], max_dim: int) -> list[tuple[str, str]]:
    return [(name, f"at most {max_dim}") for name, value in pairs if value > max_dim]
