"""VideoFrames: stills at positions of a video, one output each (services/imaging/video/).

Like `frames`, an operation that chooses pictures rather than changing them: the video runner
(services/imaging/video/run.py) decodes the frames, and each one then goes through the job's
other operations as a still image. `apply` is never given pixels.
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import VideoFrames
from services.imaging.ops.base import Context, OpSpec, Size, describe


def validate(op: VideoFrames, src: Size | None, ctx: Context) -> Size | None:
    return src  # a still is a frame, as displayed


def apply(img: Image.Image, op: VideoFrames) -> Image.Image:
    return img


SPEC = OpSpec(
    name="video_frames",
    message=VideoFrames,
    apply=apply,
    validate=validate,
    info=describe(
        "video_frames",
        VideoFrames,
        "Stills at positions of a video (its first operation), one output each, named "
        "frame-1, frame-2, ...; the job's other operations run on each.",
        fractions=("Positions as fractions of the duration.", "each 0..1, at most 10"),
        timestamps_s=("Positions in seconds (not with fractions).", "each 0..86400, at most 10"),
        select=("EXACT, or BEST_NEAR: skip black, flat and blurred frames.", "EXACT, BEST_NEAR"),
        window_s=("How far BEST_NEAR looks either side, seconds; 0 means 2.", "0..30"),
    ),
)
