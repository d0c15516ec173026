"""PlanPipeline for a video: the job's operations after the video one, planned on the still
(or the preview's animation) that the video operation will make, from the header facts the
gateway recorded at upload. The worker runs the same checks on the real intermediate."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.ops import Size, video_preview, video_sheet
from services.runtime.errors import invalid
from services.runtime.imageprobe import Format, ImageFormat
from services.runtime.video import check_video_job, video_operation


def frame_count(duration_s: float, fps: float) -> int:
    """Frames of a preview of `duration_s` at `fps` (here, not in preview.py, so that planning
    imports no decoder)."""
    return max(1, math.ceil(duration_s * fps - 1e-9))


Planner = Callable[..., operations_pb2.PipelinePlan]


def intermediate(
    video: image_pb2.Image, operations: Sequence[operations_pb2.Operation], max_frames: int
) -> tuple[image_pb2.Image, Format]:
    """The image the video operation hands to the image pipeline, as header facts, and the
    default format of its outputs (JPEG for stills, WebP for a preview)."""
    if not video.width or not video.height:
        raise invalid("image", "width and height are required")
    frame = Size(video.width, video.height)
    name = video_operation(operations)
    if name == "video_sheet":
        out = video_sheet.size(operations[0].video_sheet, frame)
        return image_pb2.Image(format=ImageFormat.TIFF, width=out.width, height=out.height), (
            ImageFormat.JPEG
        )
    if name == "video_preview":
        op = operations[0].video_preview
        out = video_preview.size(op, frame)
        seconds = video_preview.duration_s(op)
        if video.video.duration_s:
            seconds = min(seconds, max(video.video.duration_s - op.start_s, 0.0))
        frames = frame_count(seconds, video_preview.fps(op))
        if frames > max_frames:
            raise invalid(
                "operations[0].video_preview",
                f"{frames} frames; the limit is {max_frames} (shorter, or fewer frames/s)",
                "TOO_MANY_FRAMES",
            )
        still = image_pb2.Image(
            format=ImageFormat.PNG, width=out.width, height=out.height, frame_count=frames
        )
        return still, ImageFormat.WEBP
    return image_pb2.Image(format=ImageFormat.TIFF, width=frame.width, height=frame.height), (
        ImageFormat.JPEG
    )


def plan_video(
    plan: Planner,
    video: image_pb2.Image,
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
    max_frames: int,
    default_format: Format | None,
    **options: object,
) -> operations_pb2.PipelinePlan:
    """`plan` (plan.plan_pipeline) of the operations after the video one, on its intermediate;
    the video operation leads the planned operations at the frame's size."""
    check_video_job(operations, renditions, video.kind)
    still, fmt = intermediate(video, operations, max_frames)
    animated = (ImageFormat.WEBP, ImageFormat.GIF, ImageFormat.AVIF)
    if default_format is not None and (still.frame_count <= 1 or default_format in animated):
        fmt = default_format  # what video/run.py picks too
    result: operations_pb2.PipelinePlan = plan(
        still, operations[1:], renditions=renditions, default_format=fmt, **options
    )
    first = operations_pb2.PlannedOperation(
        operation=operations[0], service="imaging", width=still.width, height=still.height
    )
    result.operations.insert(0, first)
    return result
