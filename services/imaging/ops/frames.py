"""Frames: keep some frames of an animation; keeping one gives a still image.

The only way to turn an animation into a still: the pipeline never drops frames on its own.
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Frames
from services.imaging.ops.base import Context, OpSpec, Size


def kept(op: Frames, count: int) -> range:
    stop = count if op.count == 0 else min(count, op.start + op.count)
    return range(min(op.start, count), stop)


def validate(op: Frames, src: Size | None, ctx: Context) -> Size | None:
    if ctx.frames is not None and op.start >= ctx.frames:
        raise ctx.error("start", f"must be below the number of frames, {ctx.frames}")
    return src


def apply(img: Image.Image, op: Frames) -> Image.Image:
    return img


SPEC = OpSpec(
    name="frames",
    message=Frames,
    apply=apply,
    validate=validate,
    frames=kept,
)
