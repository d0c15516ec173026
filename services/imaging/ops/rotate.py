"""Rotate clockwise by any angle; multiples of 90 degrees are lossless transposes."""

from __future__ import annotations

import math

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Rotate
from services.imaging.ops.base import (
    TRANSPARENT,
    WHITE,
    Context,
    OpSpec,
    Size,
    parse_colour,
)

__all__ = ["SPEC", "parse_colour", "rotated_size"]

# Clockwise quarter turns; Pillow's Transpose names count counter-clockwise.
_QUARTERS = {
    90.0: Image.Transpose.ROTATE_270,
    180.0: Image.Transpose.ROTATE_180,
    270.0: Image.Transpose.ROTATE_90,
}


def rotated_size(src: Size, angle: float) -> Size:
    """The size Pillow's rotate(-angle, expand=True) produces; its own arithmetic, replayed."""
    ccw = -angle % 360.0
    if ccw in (0.0, 180.0):
        return src
    if ccw in (90.0, 270.0):
        return Size(src.height, src.width)
    w, h = src.width, src.height
    rad = -math.radians(ccw)
    a, b = round(math.cos(rad), 15), round(math.sin(rad), 15)
    d, e = round(-math.sin(rad), 15), round(math.cos(rad), 15)
    cx, cy = w / 2, h / 2
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    xs = [a * x + b * y + c for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [d * x + e * y + f for x, y in ((0, 0), (w, 0), (w, h), (0, h))]
    return Size(math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys)))


def validate(op: Rotate, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return None if src is None else rotated_size(src, op.angle)


def apply(img: Image.Image, op: Rotate) -> Image.Image:
    angle = op.angle % 360.0
    if angle == 0.0:
        return img
    quarter = _QUARTERS.get(angle)
    if quarter is not None:
        return img.transpose(quarter)

    had_alpha = img.mode in ("LA", "RGBA")
    colour = parse_colour(op.background) or (TRANSPARENT if had_alpha else WHITE)
    # Rotate on a transparent fill, then lay the result over the background: Pillow applies a
    # fill colour in premultiplied space (wrong for translucent colours) and would not blend the
    # anti-aliased edges with it.
    rotated = img.convert("RGBA").rotate(
        -op.angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=TRANSPARENT
    )
    if colour[3] > 0:
        canvas = Image.new("RGBA", rotated.size, colour)
        canvas.alpha_composite(rotated)
        rotated = canvas
    keep_alpha = had_alpha or colour[3] < 255
    grey = img.mode in ("L", "LA") and colour[0] == colour[1] == colour[2]
    mode = ("LA" if keep_alpha else "L") if grey else ("RGBA" if keep_alpha else "RGB")
    return rotated if mode == "RGBA" else rotated.convert(mode)


SPEC = OpSpec(
    name="rotate",
    message=Rotate,
    apply=apply,
    validate=validate,
)
