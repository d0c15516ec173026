"""VideoPreview: a short animated preview of a video (services/imaging/video/preview.py);
`apply` is never given pixels: the video runner decodes the frames, then the job's other
operations run on the animation (an animated WebP unless a convert says otherwise)."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import VideoPreview
from services.imaging.ops.base import Context, OpSpec, Size

DEFAULT_DURATION_S = 3.0
DEFAULT_WIDTH = 480
DEFAULT_FPS = 10.0


def duration_s(op: VideoPreview) -> float:
    return op.duration_s or DEFAULT_DURATION_S


def fps(op: VideoPreview) -> float:
    return op.fps or DEFAULT_FPS


def width(op: VideoPreview) -> int:
    return op.width or DEFAULT_WIDTH


def size(op: VideoPreview, frame: Size) -> Size:
    w = min(width(op), frame.width)  # never enlarged
    return Size(w, max(1, round(frame.height * w / frame.width)))


def validate(op: VideoPreview, src: Size | None, ctx: Context) -> Size | None:
    return None if src is None else size(op, src)


def apply(img: Image.Image, op: VideoPreview) -> Image.Image:
    return img


SPEC = OpSpec(
    name="video_preview",
    message=VideoPreview,
    apply=apply,
    validate=validate,
)
