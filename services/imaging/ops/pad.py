"""Pad: add a border of fixed widths around the image."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Pad
from services.imaging.ops.base import (
    Context,
    OpSpec,
    Size,
    canvas,
    parse_colour,
    paste,
)

_SIDES = ("top", "right", "bottom", "left")


def validate(op: Pad, src: Size | None, ctx: Context) -> Size | None:
    for side in _SIDES:
        if getattr(op, side) > ctx.max_output_dimension:
            raise ctx.error(side, f"must be at most {ctx.max_output_dimension}")
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    if src is None:
        return None
    return Size(src.width + op.left + op.right, src.height + op.top + op.bottom)


def apply(img: Image.Image, op: Pad) -> Image.Image:
    size = (img.width + op.left + op.right, img.height + op.top + op.bottom)
    return paste(canvas(img, size, parse_colour(op.background)), img, (op.left, op.top))


SPEC = OpSpec(
    name="pad",
    message=Pad,
    apply=apply,
    validate=validate,
)
