"""The gateway's own checks of a CreateJob pipeline, before any work is queued.

Every operation's parameter rules are the proto's (buf.validate annotations, checked through
pixmesh.rules, the module imaging and the SDK use too); nothing here restates them. The checks
that need the image run on the imaging service (PlanPipeline, against the image's header); here are
the ones it cannot do (1..max_operations ops, ops whose service says they are unavailable, other
services' parameters) and, for when the imaging service is unavailable, imaging's operations'
proto rules plus sizes over the deployment's max_output_dimension. The workers validate again when
they run, so nothing here is the last line of defence.

A rendition's operations are checked like the job's, with field paths that name the rendition
(`renditions[1].operations[0].resize.width`); the job's operations followed by any one
rendition's must fit in max_operations. `orient` may only be the job's first operation (never in
a rendition): imaging checks that too, and the coarse fallback here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from services.gateway import errors
from services.runtime.errors import FieldViolation, InvalidArgument
from services.runtime.pipeline import IMAGING, op_name, owner

# What Convert.format accepts, from its proto rule.
OUTPUT_FORMATS = frozenset(rules.OUTPUT_FORMATS)


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
        violations += _check(op, max_dimension, f"{prefix}operations[{i}]")
    if violations:
        raise InvalidArgument(
            message="; ".join(f"{v.field}: {v.description}" for v in violations),
            violations=tuple(violations),
        )


def _check(op: operations_pb2.Operation, max_dim: int, path: str) -> list[FieldViolation]:
    """The operation's proto rules (pixmesh.rules), then what the proto cannot say: sizes over the
    deployment's max_output_dimension. `path` is the operation's, e.g. "operations[1]"."""
    found = [FieldViolation(v.field, v.description) for v in rules.violations(op, path)]
    which = op.WhichOneof("op")
    if which == "resize":
        r = op.resize
        dpr = r.dpr or 1.0  # sizes are in CSS pixels: the output is dpr times larger
        pairs = (("width", r.width * dpr), ("height", r.height * dpr))
    elif which == "crop":
        pairs = (("width", op.crop.width), ("height", op.crop.height))
    else:
        return found
    found += [
        FieldViolation(f"{path}.{which}.{name}", f"at most {max_dim}")
        for name, value in pairs
        if value > max_dim
    ]
    return found
