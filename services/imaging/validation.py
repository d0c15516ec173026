"""Check a whole pipeline before any pixel is decoded, predicting each step's output size.

The gateway calls `validate_pipeline` with the upload's header before it creates a job (passing
`allow_other_services=True`, since a job may also denoise or extract metadata); the imaging
worker calls it again on its own stage, and re-checks each operation against the real image
size as it goes (`check_operation`).

Animations (GIF, WebP, APNG, AVIF sequences with more than one frame) are processed frame by
frame and stay animated; the number of frames is tracked through the pipeline (the `frames`
operation changes it), and an output format that cannot hold an animation is rejected rather
than silently given the first frame. Other multi-image files (TIFF pages, HEIF collections) are
still images of their first or primary picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from pixmesh.common.v1 import operations_pb2
from services.imaging.encode import ANIMATED, choose_format
from services.imaging.errors import (
    ANIMATION_UNSUPPORTED,
    OUTPUT_TOO_LARGE,
    TOO_MANY_OPERATIONS,
    UNKNOWN_OPERATION,
    UNSUPPORTED_OPERATION,
)
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY, Context, OpSpec, Size
from services.runtime.errors import invalid
from services.runtime.imageprobe import Format, ImageFormat, ImageHeader
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
    # What the pipeline asked for (a Convert, else the default); None: follow the input, which
    # for HEIF depends on alpha, known only after decoding (see encode.choose_format).
    requested_format: Format | None
    convert: PlannedOp | None  # the Convert that sets the output options, if any
    input_frames: int  # frames to decode: > 1 only for animations
    output_frames: int

    @property
    def options(self) -> operations_pb2.Convert:
        """The encoder options: the last Convert's, else the defaults."""
        if self.convert is None:
            return operations_pb2.Convert()
        assert isinstance(self.convert.params, operations_pb2.Convert)
        return self.convert.params

    @property
    def quality(self) -> int:  # 0: the format's default
        return self.options.quality


def animation_frames(header: ImageHeader) -> int:
    """Frames the pipeline processes: all of an animation, one of anything else."""
    return header.frame_count if header.format in ANIMATED else 1


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
    input_frames = animation_frames(header) if header else None
    frames = input_frames
    steps = []
    for index, op in enumerate(operations):
        step = check_operation(
            index, op, size, limits, allow_other_services=allow_other_services, frames=frames
        )
        steps.append(step)
        size = step.size
        if frames is not None and step.spec is not None and step.spec.frames is not None:
            frames = len(step.spec.frames(step.params, frames))
    if size is not None:
        check_output(size, limits)
    convert = last_convert(steps)
    requested = _format_of(convert) if convert else default_format
    if convert is None and frames and frames > 1 and requested not in ANIMATED:
        requested = None  # a deployment's default format does not flatten animations
    fmt = choose_format(requested, header.format, None) if header else requested
    if frames and frames > 1 and fmt is not None and fmt not in ANIMATED:
        where = f"operations[{convert.index}].convert.format" if convert else "operations"
        names = ", ".join(sorted(ImageFormat.Name(f) for f in ANIMATED))
        raise invalid(
            where,
            f"the image is an animation of {frames} frames and {ImageFormat.Name(fmt)} cannot "
            f"hold one: convert to {names}, or keep one frame with "
            '{"frames": {"count": 1}}',
            ANIMATION_UNSUPPORTED,
        )
    return Plan(tuple(steps), size, fmt, requested, convert, input_frames or 1, frames or 1)


def check_operation(
    index: int,
    op: operations_pb2.Operation,
    size: Size | None,
    limits: Limits,
    *,
    allow_other_services: bool = False,
    frames: int | None = 1,
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
    ctx = Context(path, limits.max_output_dimension, frames)
    out = spec.validate(params, size, ctx)
    if out is not None:
        _check_growth(size, out, limits, ctx)
    return PlannedOp(index, name, params, spec, out)


def check_output(size: Size, limits: Limits) -> None:
    """The final image must fit max_output_dimension (the pipeline checks again when a step's
    size could not be predicted, e.g. after a trim)."""
    if max(size.width, size.height) > limits.max_output_dimension:
        raise invalid(
            "operations",
            f"the output would be {size.width}x{size.height} pixels; the limit is "
            f"{limits.max_output_dimension} per side (add a resize)",
            OUTPUT_TOO_LARGE,
        )


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
    # Intermediate images are held in memory like decoded inputs: the same pixel budget, for
    # all the frames of an animation together.
    pixels = after.width * after.height * (ctx.frames or 1)
    grown = before is None or after.width * after.height > before.width * before.height
    if pixels > limits.max_pixels and grown:
        raise ctx.error(
            "",
            f"would produce {after.width}x{after.height} pixels"
            + (f" in each of {ctx.frames} frames" if ctx.animated else "")
            + f"; the limit is {limits.max_pixels} pixels",
            OUTPUT_TOO_LARGE,
        )


def last_convert(steps: Sequence[PlannedOp]) -> PlannedOp | None:
    """The Convert that decides the output format and options: the last one."""
    for step in reversed(steps):
        if isinstance(step.params, operations_pb2.Convert):
            return step
    return None


def _format_of(step: PlannedOp) -> Format:
    assert isinstance(step.params, operations_pb2.Convert)
    return step.params.format
