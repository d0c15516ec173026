"""Check a whole pipeline before any pixel is decoded, predicting each step's output size.

`validate_job` checks a job's outputs before it is created (PlanPipeline, passing
`allow_other_services=True`, since a job may also denoise or extract metadata); the imaging
worker calls it again on its own stage, and re-checks each operation against the real image
size as it goes (`check_operation`). Every output is one pipeline (`validate_pipeline`).

Animations (GIF, WebP, APNG, AVIF sequences with more than one frame) are processed frame by
frame and stay animated; the number of frames is tracked through the pipeline (the `frames`
operation changes it), and an output format that cannot hold an animation is rejected rather
than silently given the first frame. Other multi-image files (TIFF pages, HEIF collections) are
still images of their first or primary picture.

A job's outputs are its renditions, each checked as one pipeline, the job's operations followed
by the rendition's own (errors in a rendition's part name its field,
`renditions[1].operations[0].resize.width`); a plain job is a job with one unnamed rendition
that has no operations of its own.

The EXIF orientation is applied when the image is decoded, before any operation, unless the
pipeline starts with `orient {mode: IGNORE}`: then every size is planned on the pixels as stored
(`ImageHeader.stored_size`). `orient` is allowed only there, as the first of the job's operations,
since nothing after the decode can undo or redo the decision; a rendition cannot have one (the
renditions share one decode).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf.message import Message

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from services.imaging.encode import ANIMATED, choose_format
from services.imaging.errors import (
    ANIMATION_UNSUPPORTED,
    IMAGE_TOO_LARGE,
    INVALID_OPERATION,
    OUTPUT_TOO_LARGE,
    TOO_MANY_OPERATIONS,
    UNKNOWN_OPERATION,
    UNSUPPORTED_FORMAT,
    UNSUPPORTED_OPERATION,
)
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY, Context, OpSpec, Size
from services.runtime.errors import FieldViolation, InvalidArgument, invalid
from services.runtime.imageprobe import Format, ImageFormat, ImageHeader
from services.runtime.pipeline import (
    IMAGING,
    INFERENCE,
    METADATA,
    check_renditions,
    inference_output_format,
    op_name,
    owner,
    plan_stages,
    service_of,
)


@dataclass(frozen=True)
class PlannedOp:
    index: int
    name: str
    params: Message
    spec: OpSpec[Any] | None  # None: the operation runs on another service
    size: Size | None  # the image size after this operation, when it can be known
    frames: int | None = 1  # frames after this operation (None: not known, without a header)


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
    # Apply the EXIF orientation after decoding (False: the pipeline starts with orient IGNORE).
    auto_orient: bool = True

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


def ignores_orientation(operations: Sequence[operations_pb2.Operation]) -> bool:
    """Whether the pipeline keeps the stored pixels: it starts with `orient {mode: IGNORE}`."""
    return (
        bool(operations)
        and operations[0].WhichOneof("op") == "orient"
        and operations[0].orient.mode == operations_pb2.Orient.IGNORE
    )


def source_size(header: ImageHeader, auto_orient: bool = True) -> Size:
    """The size of the decoded pixels after the orient step: as displayed, or as stored."""
    if auto_orient:
        return Size(header.width, header.height)
    return Size(*header.stored_size)


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
    writes_image: bool = True,
) -> Plan:
    """Raise InvalidArgument (with the offending field) unless every operation can run.

    `header` None checks the parameters alone. Operations of other services are accepted only
    with `allow_other_services`, and are assumed to keep the image size. `writes_image` False
    (a job of metadata operations alone: no output) leaves out the output size limit.
    """
    if len(operations) > limits.max_operations:
        raise invalid(
            "operations",
            f"{len(operations)} operations; the limit is {limits.max_operations}",
            TOO_MANY_OPERATIONS,
        )
    auto_orient = not ignores_orientation(operations)
    size = source_size(header, auto_orient) if header else None
    input_frames = animation_frames(header) if header else None
    frames = input_frames
    steps = []
    for index, op in enumerate(operations):
        if index > 0 and op.WhichOneof("op") == "orient":
            raise invalid(
                f"operations[{index}].orient",
                "must be the first operation: the EXIF orientation is applied (or not) as the "
                "image is decoded, before any other operation",
                INVALID_OPERATION,
            )
        step = check_operation(
            index, op, size, limits, allow_other_services=allow_other_services, frames=frames
        )
        steps.append(step)
        size, frames = step.size, step.frames
    if size is not None and writes_image:
        check_output(size, limits)
    plan = _plan(tuple(steps), size, header, default_format, input_frames or 1, frames, auto_orient)
    convert, fmt = plan.convert, plan.output_format
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
    return plan


def _plan(
    steps: tuple[PlannedOp, ...],
    size: Size | None,
    header: ImageHeader | None,
    default_format: Format | None,
    input_frames: int,
    frames: int | None,
    auto_orient: bool,
) -> Plan:
    """The Plan of `steps`, deciding the output format (nothing is checked here)."""
    convert = last_convert(steps)
    requested = _format_of(convert) if convert else default_format
    if convert is None and frames and frames > 1 and requested not in ANIMATED:
        requested = None  # a deployment's default format does not flatten animations
    if header is None:
        fmt = requested
    elif any(service_of(step.name) == INFERENCE for step in steps):
        fmt = _format_through_stages(steps, header.format, default_format)
    else:
        fmt = choose_format(requested, header.format, None)
    return Plan(steps, size, fmt, requested, convert, input_frames, frames or 1, auto_orient)


def _format_through_stages(
    steps: Sequence[PlannedOp], source: Format, default_format: Format | None
) -> Format:
    """The output format of a pipeline that goes through the inference service: each stage
    writes what the next one reads. An imaging stage writes its last Convert's format, else
    the deployment's default, else what it was given if it can write it (choose_format); a
    denoise stage keeps JPEG, PNG, WebP and TIFF and writes anything else as PNG
    (services.runtime.pipeline.inference_output_format). A denoise runs on one frame (see
    check_operation), so no animation rule applies here."""
    fmt, stage = source, list[PlannedOp]()
    for step in steps:
        service = service_of(step.name)
        if service == IMAGING:
            stage.append(step)
        elif service == INFERENCE:
            if stage:
                convert = last_convert(stage)
                fmt = choose_format(_format_of(convert) if convert else default_format, fmt, None)
                stage = []
            fmt = inference_output_format(fmt)
    if stage:
        convert = last_convert(stage)
        fmt = choose_format(_format_of(convert) if convert else default_format, fmt, None)
    return fmt


def head(
    plan: Plan, count: int, header: ImageHeader | None, default_format: Format | None = None
) -> Plan:
    """The plan of the first `count` operations of `plan`, which has been validated: e.g. the
    result that a job's renditions start from (its output size and format are not checked,
    since it is not encoded)."""
    steps = plan.operations[:count]
    if steps:
        size, frames = steps[-1].size, steps[-1].frames
    else:
        size = source_size(header, plan.auto_orient) if header else None
        frames = plan.input_frames if header else None
    return _plan(steps, size, header, default_format, plan.input_frames, frames, plan.auto_orient)


def outputs_of(
    renditions: Sequence[operations_pb2.Rendition],
) -> Sequence[operations_pb2.Rendition]:
    """A job's outputs: its renditions, or for a plain job one unnamed rendition (no name, no
    operations of its own: its output is that of the job's operations)."""
    return renditions or (operations_pb2.Rendition(),)


def validate_job(
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
    header: ImageHeader | None,
    limits: Limits,
    *,
    allow_other_services: bool = False,
    default_format: Format | None = None,
) -> tuple[Plan, ...]:
    """The plan of each output of a job, in order (see `outputs_of`): `operations`, then the
    rendition's, as one pipeline; a plain job's one plan is `validate_pipeline(operations)`.

    Raises InvalidArgument (with the offending field) unless every output can run: names and
    count as `services.runtime.pipeline.check_renditions` wants them, each whole pipeline valid
    and within max_operations. The renditions must also agree on Convert.keep_icc: the colour
    step runs once, before the shared operations; and none may have an `orient`: the job's
    operations decide the orientation for all of them.
    """
    check_renditions(renditions, limits.max_renditions)
    for i, rendition in enumerate(renditions):
        for j, op in enumerate(rendition.operations):
            if op.WhichOneof("op") == "orient":
                raise invalid(
                    f"renditions[{i}].operations[{j}].orient",
                    "cannot be used in a rendition: the renditions share one decode, so the "
                    "job's operations decide the orientation of all of them (put orient first "
                    "in the job's operations)",
                    INVALID_OPERATION,
                )
    shared = len(operations)
    if shared > limits.max_operations:
        raise invalid(
            "operations",
            f"{shared} operations; the limit is {limits.max_operations}",
            TOO_MANY_OPERATIONS,
        )
    # A job whose stages are all metadata's writes no image (the last stage that makes one
    # gives the outputs): a 30000x1 strip may have its metadata extracted without a resize.
    # An imaging stage always writes one, its operations empty or not.
    stages = plan_stages(operations, renditions)
    writes_image = not stages or any(stage.service != METADATA for stage in stages)
    plans = []
    for i, rendition in enumerate(outputs_of(renditions)):
        own = len(rendition.operations)
        if shared + own > limits.max_operations:
            raise invalid(
                f"renditions[{i}].operations",
                f"{shared} operations before the rendition's {own}; the limit is "
                f"{limits.max_operations} for both together",
                TOO_MANY_OPERATIONS,
            )
        with in_rendition(i, shared) if rendition.name else nullcontext():
            plans.append(
                validate_pipeline(
                    [*operations, *rendition.operations],
                    header,
                    limits,
                    allow_other_services=allow_other_services,
                    default_format=default_format,
                    writes_image=writes_image,
                )
            )
    keep_icc = plans[0].options.keep_icc
    for i, plan in enumerate(plans):
        if plan.options.keep_icc != keep_icc:
            own_convert = plan.convert is not None and plan.convert.index >= shared
            path = f"renditions[{i}].operations"
            if plan.convert is not None and own_convert:
                path += f"[{plan.convert.index - shared}].convert.keep_icc"
            raise invalid(
                path,
                "every rendition must keep the ICC profile, or none: the colour step runs once, "
                "before the job's operations",
            )
    return tuple(plans)


@contextmanager
def in_rendition(index: int, shared: int) -> Iterator[None]:
    """Name the request's field in an InvalidArgument raised for rendition `index`'s pipeline
    (`shared` operations of the job, then the rendition's): `operations[shared + j]` is
    `renditions[index].operations[j]`, and a fault of the whole pipeline (its length, its
    output) is the rendition's. Faults of the shared operations keep their field."""
    try:
        yield
    except InvalidArgument as exc:
        violations = tuple(
            FieldViolation(_rendition_field(v.field, index, shared), v.description)
            for v in exc.violations
        )
        message = exc.message
        for old, new in zip(exc.violations, violations, strict=True):
            if old.field != new.field and message.startswith(old.field):
                message = new.field + message[len(old.field) :]
        raise replace(exc, message=message, violations=violations) from exc


_OPERATION = re.compile(r"operations\[(\d+)\]")


def _rendition_field(path: str, index: int, shared: int) -> str:
    if path == "operations":
        return f"renditions[{index}].operations"
    match = _OPERATION.match(path)
    if match is None or int(match[1]) < shared:
        return path
    return f"renditions[{index}].operations[{int(match[1]) - shared}]{path[match.end() :]}"


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
        if service == INFERENCE and frames is not None and frames > 1:
            # The inference service denoises one picture: the animation came back as its
            # first frame, in another format, where the plan promised every frame.
            raise invalid(
                path,
                f"the image is an animation of {frames} frames and {name} runs on one picture: "
                'keep one frame first with {"frames": {"count": 1}}',
                ANIMATION_UNSUPPORTED,
            )
        return PlannedOp(index, name, params, None, size, frames)
    spec = REGISTRY.get(name)
    if spec is None:
        raise invalid(path, "not supported by this imaging service", UNKNOWN_OPERATION)
    ctx = Context(path, limits.max_output_dimension, frames)
    check_rules(params, path)
    out = spec.validate(params, size, ctx)
    if out is not None:
        _check_growth(size, out, limits, ctx)
    if frames is not None and spec.frames is not None:
        frames = len(spec.frames(params, frames))
    return PlannedOp(index, name, params, spec, out, frames)


def check_rules(params: Message, path: str) -> None:
    """The operation's proto rules (buf.validate annotations, through pixmesh.rules: the same
    check as the gateway's and the SDK's). Each op's own `validate` keeps only what needs the
    image or the deployment's limits. `path` is the operation's, e.g. "operations[0].rotate"."""
    found = rules.violations(params, path)
    if found:
        first = found[0]
        field = ".".join(first.field.rsplit(".", 2)[-2:])
        raise InvalidArgument(
            message="; ".join(f"{v.field}: {v.description}" for v in found),
            reason=_RULE_REASONS.get((field, first.rule), INVALID_OPERATION),
            violations=tuple(FieldViolation(v.field, v.description) for v in found),
        )


# The reasons clients branch on where a proto rule stands for what imaging always reported:
# a format it cannot write, a watermark larger than the probe accepts.
_RULE_REASONS = {
    ("convert.format", "enum.in"): UNSUPPORTED_FORMAT,
    ("convert.format", "format.required"): UNSUPPORTED_FORMAT,
    ("watermark.image", "bytes.max_len"): IMAGE_TOO_LARGE,
}


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
