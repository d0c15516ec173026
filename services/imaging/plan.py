"""PlanPipeline: validate a job's pipeline against an image's header facts and predict its output.

The gateway sends the header it recorded at upload (format, displayed size, frames), so nothing is
downloaded or decoded; the checks are exactly the ones the worker runs (`validate_pipeline`).

The cost is a deliberately simple linear model, documented here and in the README: milliseconds
per megapixel for decoding the source, for each operation (on the larger of its input and output)
and for encoding, per format. The constants are rough figures for one core of a 2-core machine
(bench/imaging.py gives the real ones for a deployment); inference ops are priced separately
because DnCNN on CPU costs two orders of magnitude more than a resize.
"""

from __future__ import annotations

from collections.abc import Sequence

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.limits import Limits
from services.imaging.ops import Size
from services.imaging.validation import Plan, animation_frames, validate_pipeline
from services.runtime.errors import invalid
from services.runtime.imageprobe import Format, ImageFormat, ImageHeader
from services.runtime.pipeline import IMAGING, INFERENCE, owner

DECODE_MS_PER_MP = 12.0
OP_MS_PER_MP = 6.0
INFERENCE_MS_PER_MP = 800.0  # DnCNN-S with tiling on CPU; far less on a GPU
ENCODE_MS_PER_MP: dict[Format, float] = {
    ImageFormat.JPEG: 8.0,
    ImageFormat.PNG: 30.0,
    ImageFormat.WEBP: 40.0,
    ImageFormat.AVIF: 120.0,
    ImageFormat.GIF: 25.0,
    ImageFormat.TIFF: 5.0,
}
DEFAULT_ENCODE_MS_PER_MP = 30.0


def header_of(image: image_pb2.Image) -> ImageHeader:
    """The header facts the gateway recorded at upload (width and height as displayed)."""
    if image.format == image_pb2.IMAGE_FORMAT_UNSPECIFIED or not image.width or not image.height:
        raise invalid("image", "format, width and height are required")
    return ImageHeader(
        format=image.format,
        width=image.width,
        height=image.height,
        frame_count=max(image.frame_count, 1),
        size_bytes=image.size_bytes,
    )


def plan_pipeline(
    image: image_pb2.Image,
    operations: Sequence[operations_pb2.Operation],
    limits: Limits,
    default_format: Format | None = None,
) -> operations_pb2.PipelinePlan:
    """Raise InvalidArgument (with the field at fault) unless the pipeline can run on `image`."""
    for i, op in enumerate(operations):
        if op.WhichOneof("op") == "convert" and op.convert.auto:
            # The gateway resolves it from the client's Accept header; a worker never sees it.
            raise invalid(f"operations[{i}].convert.auto", "must be resolved before planning")
    header = header_of(image)
    plan = validate_pipeline(
        operations, header, limits, allow_other_services=True, default_format=default_format
    )
    out = plan.output_size
    return operations_pb2.PipelinePlan(
        operations=[
            operations_pb2.PlannedOperation(
                operation=op,
                service=owner(op, step.index),
                width=step.size.width if step.size else 0,
                height=step.size.height if step.size else 0,
            )
            for op, step in zip(operations, plan.operations, strict=True)
        ],
        output_width=out.width if out else 0,
        output_height=out.height if out else 0,
        output_format=plan.output_format or image_pb2.IMAGE_FORMAT_UNSPECIFIED,
        output_frames=plan.output_frames,
        estimated_cost=estimate_cost(header, operations, plan),
    )


def estimate_cost(
    header: ImageHeader, operations: Sequence[operations_pb2.Operation], plan: Plan
) -> operations_pb2.PipelineCost:
    frames = animation_frames(header)
    decoded = header.width * header.height * frames / 1e6
    size: Size | None = Size(header.width, header.height)
    processed = 0.0
    cpu = DECODE_MS_PER_MP * decoded
    for op, step in zip(operations, plan.operations, strict=True):
        after = step.size or size  # unknown (after a trim): assume the size is kept
        if size is None or after is None:
            continue
        mp = max(size.width * size.height, after.width * after.height) * frames / 1e6
        service = owner(op, step.index)
        if service == IMAGING:
            processed += mp
            cpu += OP_MS_PER_MP * mp
        elif service == INFERENCE:
            processed += mp
            cpu += INFERENCE_MS_PER_MP * mp
        size = after
        # Animations: a `frames` op changes how many frames the later steps touch.
        if step.spec is not None and step.spec.frames is not None:
            frames = len(step.spec.frames(step.params, frames))
    if size is not None:
        fmt = plan.output_format
        per_mp = (
            DEFAULT_ENCODE_MS_PER_MP
            if fmt is None
            else ENCODE_MS_PER_MP.get(fmt, DEFAULT_ENCODE_MS_PER_MP)
        )
        cpu += per_mp * size.width * size.height * plan.output_frames / 1e6
    return operations_pb2.PipelineCost(
        decoded_megapixels=round(decoded, 3),
        processed_megapixels=round(processed, 3),
        cpu_ms=max(1, round(cpu)),
    )
