"""Check a whole pipeline before any pixel is decoded, predicting each step's output size.

The gateway calls `validate_pipeline` with the upload's header before it creates a job (passing
`allow_other_services=True`, since a job may also denoise or extract metadata); the imaging
worker calls it again on its own stage, and re-checks each operation against the real image
size as it goes (`check_operation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from pixmesh.common.v1 import operations_pb2
from services.imaging.encode import choose_format
from services.imaging.errors import (
    OUTPUT_TOO_LARGE,
    TOO_MANY_OPERATIONS,
    UNKNOWN_OPERATION,
    UNSUPPORTED_OPERATION,
)
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY, Context, OpSpec, Size
from services.runtime.errors import invalid
from services.runtime.imageprobe import Format, ImageHeader
from services.runtime.pipeline import IMAGING, op_name, owner


@dataclass(frozen=True)
class PlannedOp:
    index: int
    name: str
    params: Message
    spec: OpSpec[Any] | None  # None: the operation runs on another service
    size: Size | None  # the image size after this operation, when it can be known


@dataclass(frozen=True)
class Plan:
    operations: tuple[PlannedOp, ...]
    output_size: Size | None
    output_format: Format | None  # None when neither a Convert nor the input format is known
    quality: int  # 0: the format's default


def validate_pipeline(
    operations: Sequence[operations_pb2.Operation],
    header: ImageHeader | None,
    limits: Limits,
    *,
    allow_other_services: bool = False,
    default_format: Format | None = None,
) -> Plan:
    """Raise InvalidArgument (with the offending field) unless every operation can run.

    `header` None checks the parameters alone. Operations of other services are accepted only
    with `allow_other_services`, and are assumed to keep the image size.
    """
    if len(operations) > limits.max_operations:
        raise invalid(
            "operations",
            f"{len(operations)} operations; the limit is {limits.max_operations}",
            TOO_MANY_OPERATIONS,
        )
    size = Size(header.width, header.height) if header else None
    steps = []
    for index, op in enumerate(operations):
        step = check_operation(index, op, size, limits, allow_other_services=allow_other_services)
        steps.append(step)
        size = step.size
    if size is not None and max(size.width, size.height) > limits.max_output_dimension:
        raise invalid(
            "operations",
            f"the output would be {size.width}x{size.height} pixels; the limit is "
            f"{limits.max_output_dimension} per side (add a resize)",
            OUTPUT_TOO_LARGE,
        )
    requested, quality = output_settings(steps, default_format)
    fmt = choose_format(requested, header.format, None) if header else requested
    return Plan(tuple(steps), size, fmt, quality)


def check_operation(
    index: int,
    op: operations_pb2.Operation,
    size: Size | None,
    limits: Limits,
    *,
    allow_other_services: bool = False,
) -> PlannedOp:
    name = op_name(op, index)
    params: Message = getattr(op, name)
    path = f"operations[{index}].{name}"
    service = owner(op, index)
    if service != IMAGING:
        if not allow_other_services:
            raise invalid(
                path, f"runs on the {service} service, not imaging", UNSUPPORTED_OPERATION
            )
        return PlannedOp(index, name, params, None, size)
    spec = REGISTRY.get(name)
    if spec is None:
        raise invalid(path, "not supported by this imaging service", UNKNOWN_OPERATION)
    ctx = Context(path, limits.max_output_dimension)
    out = spec.validate(params, size, ctx)
    if out is not None:
        _check_growth(size, out, limits, ctx)
    return PlannedOp(index, name, params, spec, out)


def _check_growth(before: Size | None, after: Size, limits: Limits, ctx: Context) -> None:
    """Blame the operation that makes the image too large (the input itself may be larger than
    max_output_dimension as long as the pipeline shrinks it; that is checked at the end)."""
    wide = max(after.width, after.height)
    if wide > limits.max_output_dimension and (
        before is None or wide > max(before.width, before.height)
    ):
        raise ctx.error(
            "",
            f"would produce {after.width}x{after.height} pixels; the limit is "
            f"{limits.max_output_dimension} per side",
            OUTPUT_TOO_LARGE,
        )
    # Intermediate images are held in memory like decoded inputs: the same pixel budget.
    pixels = after.width * after.height
    if pixels > limits.max_pixels and (before is None or pixels > before.width * before.height):
        raise ctx.error(
            "",
            f"would produce {after.width}x{after.height} pixels; the limit is "
            f"{limits.max_pixels} pixels",
            OUTPUT_TOO_LARGE,
        )


def output_settings(
    steps: Sequence[PlannedOp], default: Format | None
) -> tuple[Format | None, int]:
    """Format and quality from the last Convert, else `default` and the format's quality."""
    for step in reversed(steps):
        if isinstance(step.params, operations_pb2.Convert):
            return step.params.format, step.params.quality
    return default, 0
