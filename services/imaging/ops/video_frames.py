"""VideoFrames: stills at positions of a video, one output each (services/imaging/video/).

Like `frames`, an operation that chooses pictures rather than changing them: the video runner
(services/imaging/video/run.py) decodes the frames, and each one then goes through the job's
other operations as a still image. `apply` is never given pixels.
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import VideoFrames
from services.imaging.ops.base import Context, OpSpec, Size


def validate(op: VideoFrames, src: Size | None, ctx: Context) -> Size | None:
    return src  # a still is a frame, as displayed


def apply(img: Image.Image, op: VideoFrames) -> Image.Image:
    return img


SPEC = OpSpec(
    name="video_frames",
    message=VideoFrames,
    apply=apply,
    validate=validate,
)
