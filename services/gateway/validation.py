"""The gateway's own checks of a CreateJob pipeline, before any work is queued.

The exact checks of imaging's operations run on the imaging service (PlanPipeline, against the
image's header); here are the ones it cannot do (1..max_operations ops, ops whose service says they
are unavailable, other services' parameters) and a coarse fallback of imaging's (sizes over the
limits, formats we cannot write) for when the imaging service is unavailable. The workers validate
again when they run, so nothing here is the last line of defence.

A rendition's operations are checked like the job's, with field paths that name the rendition
(`renditions[1].operations[0].resize.width`); the job's operations followed by any one
rendition's must fit in max_operations. `orient` may only be the job's first operation (never in
a rendition): imaging checks that too, and the coarse fallback here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.gateway import errors
from services.runtime.errors import FieldViolation, InvalidArgument
from services.runtime.pipeline import IMAGING, op_name, owner

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
    """Every coarse check: what CreateJob runs when the imaging service cannot plan."""
    check_shape(ops, max_operations)
    check_available(ops, unavailable)
    check_params(ops, max_dimension)


def check_shape(
    ops: Sequence[operations_pb2.Operation],
    max_operations: int,
    renditions: Sequence[operations_pb2.Rendition] = (),
) -> None:
    """1..max_operations operations (none are needed when there are renditions), and the job's
    operations plus any one rendition's at most max_operations."""
    if not ops and not renditions:
        raise InvalidArgument(
            message="operations: at least one operation (or a preset, or renditions) is required",
            violations=(FieldViolation("operations", "at least one operation is required"),),
        )
    if len(ops) > max_operations:
        raise InvalidArgument(
            message=f"operations: at most {max_operations} operations per job",
            reason="TOO_MANY_OPERATIONS",
            violations=(FieldViolation("operations", f"at most {max_operations}"),),
        )
    for i, rendition in enumerate(renditions):
        if len(ops) + len(rendition.operations) > max_operations:
            field = f"renditions[{i}].operations"
            problem = (
                f"at most {max_operations} operations with the job's {len(ops)} (presets expanded)"
            )
            raise InvalidArgument(
                message=f"{field}: {problem}",
                reason="TOO_MANY_OPERATIONS",
                violations=(FieldViolation(field, problem),),
            )


def check_available(
    ops: Sequence[operations_pb2.Operation], unavailable: Mapping[str, str], prefix: str = ""
) -> None:
    """FailedPrecondition for an op that exists but cannot run here (`unavailable` maps op name
    -> reason, from the workers' ListOperations). `prefix` goes before `operations[i]`."""
    for i, op in enumerate(ops):
        name = op_name(op, i, prefix)
        if name in unavailable:
            raise errors.operation_unavailable(f"{prefix}operations[{i}]", name, unavailable[name])


def check_params(
    ops: Sequence[operations_pb2.Operation],
    max_dimension: int,
    *,
    skip_imaging: bool = False,
    prefix: str = "",
) -> None:
    """Raise InvalidArgument listing every violation found without the image. `skip_imaging`
    leaves imaging's operations to its exact PlanPipeline checks; `prefix` goes before
    `operations[i]` in the field paths (e.g. "renditions[0].")."""
    violations: list[FieldViolation] = []
    for i, op in enumerate(ops):
        if skip_imaging and owner(op, i, prefix) == IMAGING:
            continue
        name = op_name(op, i, prefix)
        if name == "orient" and (i > 0 or prefix):
            where = "in a rendition" if prefix else "after another operation"
            violations.append(
                FieldViolation(
                    f"{prefix}operations[{i}].orient",
                    f"cannot be used {where}: only as the job's first operation",
                )
            )
        for field, problem in _check(op, max_dimension):
            violations.append(FieldViolation(f"{prefix}operations[{i}].{name}.{field}", problem))
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
        if (c.width == 0 and not c.width_ratio) or (c.height == 0 and not c.height_ratio):
            out.append(("width", "width and height (or their ratios) must be positive"))
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
