"""Extend: grow the canvas to a size and/or an aspect ratio, without scaling the image."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Extend
from services.imaging.ops import gravity
from services.imaging.ops.base import (
    Context,
    OpSpec,
    Size,
    canvas,
    parse_colour,
    paste,
    round_half_up,
)

MIN_RATIO, MAX_RATIO = 0.01, 100.0


def extended(op: Extend, src: Size) -> Size:
    w, h = max(src.width, op.width), max(src.height, op.height)
    if op.aspect_ratio:
        if w / h < op.aspect_ratio:
            w = max(w, round_half_up(h * op.aspect_ratio))
        else:
            h = max(h, round_half_up(w / op.aspect_ratio))
    return Size(w, h)


def validate(op: Extend, src: Size | None, ctx: Context) -> Size | None:
    for field in ("width", "height"):
        if getattr(op, field) > ctx.max_output_dimension:
            raise ctx.error(field, f"must be at most {ctx.max_output_dimension}")
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return None if src is None else extended(op, src)


def apply(img: Image.Image, op: Extend) -> Image.Image:
    size = extended(op, Size.of(img))
    if size == Size.of(img):
        return img
    x, y = gravity.place(op.gravity, (size.width, size.height), img.size)
    background = canvas(img, (size.width, size.height), parse_colour(op.background))
    return paste(background, img, (round_half_up(x), round_half_up(y)))


SPEC = OpSpec(
    name="extend",
    message=Extend,
    apply=apply,
    validate=validate,
)
