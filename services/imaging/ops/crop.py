"""Crop: cut out a rectangle, in pixels of the image as it is at this step."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Crop
from services.imaging.ops.base import Context, OpSpec, Size, describe


def validate(op: Crop, src: Size | None, ctx: Context) -> Size | None:
    for field, value in (("width", op.width), ("height", op.height)):
        if value == 0:
            raise ctx.error(field, "must be at least 1")
    if src is not None:
        # Rejected rather than clamped: a silently smaller crop is a wrong answer.
        if op.x + op.width > src.width:
            raise ctx.error(
                "width", f"x + width = {op.x + op.width} exceeds the image width {src.width}"
            )
        if op.y + op.height > src.height:
            raise ctx.error(
                "height", f"y + height = {op.y + op.height} exceeds the image height {src.height}"
            )
    return Size(op.width, op.height)


def apply(img: Image.Image, op: Crop) -> Image.Image:
    return img.crop((op.x, op.y, op.x + op.width, op.y + op.height))


SPEC = OpSpec(
    name="crop",
    message=Crop,
    apply=apply,
    validate=validate,
    info=describe(
        "crop",
        Crop,
        "Cut out a rectangle; it must lie inside the image as it is at this step.",
        x=("Left edge in pixels.", "x + width <= image width"),
        y=("Top edge in pixels.", "y + height <= image height"),
        width=("Width in pixels.", ">= 1"),
        height=("Height in pixels.", ">= 1"),
    ),
)
