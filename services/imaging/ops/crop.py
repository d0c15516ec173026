"""Crop: cut out a rectangle of the image as it is at this step.

Its size is in pixels or a fraction of the image; it sits at (x, y) or where its gravity puts
it (a compass point, a focus point, or the most interesting region).
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Crop
from services.imaging.ops import gravity
from services.imaging.ops.base import Context, OpSpec, Size, round_half_up


def size(op: Crop, src: Size) -> Size:
    """The rectangle's size in `src`; `op` must have passed `validate`."""
    w = op.width or max(1, round_half_up(op.width_ratio * src.width))
    h = op.height or max(1, round_half_up(op.height_ratio * src.height))
    return Size(w, h)


def validate(op: Crop, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    if op.HasField("gravity"):
        gravity.validate(op.gravity, ctx, "gravity")
    if src is None:
        return Size(op.width, op.height) if op.width and op.height else None
    out = size(op, src)
    # Rejected rather than clamped: a silently smaller crop is a wrong answer.
    if op.x + out.width > src.width:
        raise ctx.error(
            "width", f"x + width = {op.x + out.width} exceeds the image width {src.width}"
        )
    if op.y + out.height > src.height:
        raise ctx.error(
            "height", f"y + height = {op.y + out.height} exceeds the image height {src.height}"
        )
    return out


def apply(img: Image.Image, op: Crop) -> Image.Image:
    src = Size.of(img)
    out = size(op, src)
    if op.HasField("gravity"):
        fx, fy = gravity.place(op.gravity, (src.width, src.height), (out.width, out.height), img)
        x, y = round_half_up(fx), round_half_up(fy)
    else:
        x, y = op.x, op.y
    return img.crop((x, y, x + out.width, y + out.height))


SPEC = OpSpec(
    name="crop",
    message=Crop,
    apply=apply,
    validate=validate,
)
