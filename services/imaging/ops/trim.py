"""Trim: cut away borders of one colour (the top-left pixel's unless given)."""

from __future__ import annotations

import functools

from PIL import Image, ImageChops

from pixmesh.common.v1.operations_pb2 import Trim
from services.imaging.errors import ANIMATION_UNSUPPORTED
from services.imaging.ops.base import Context, OpSpec, Size, parse_colour


def validate(op: Trim, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    if ctx.animated:
        # Each frame would lose different borders, and frames must keep one size.
        raise ctx.error("", "cannot trim an animation", ANIMATION_UNSUPPORTED)
    return None  # the size depends on the pixels


def box(img: Image.Image, op: Trim) -> tuple[int, int, int, int] | None:
    """The part to keep, or None when the whole image is border."""
    rgba = img.convert("RGBA")
    ref = parse_colour(op.color) or rgba.getpixel((0, 0))
    assert isinstance(ref, tuple)
    # 255 where a channel differs from the border by more than the threshold.
    lut = [0] * (op.threshold + 1) + [255] * (255 - op.threshold)
    if ref[3] == 0:
        # Transparent border: its colour channels mean nothing, only alpha counts.
        content = rgba.getchannel("A").point(lut)
    else:
        diff = ImageChops.difference(rgba, Image.new("RGBA", rgba.size, ref))
        content = functools.reduce(ImageChops.lighter, (band.point(lut) for band in diff.split()))
    found = content.getbbox()
    if found is None:
        return None
    left, top, right, bottom = found
    if op.equal_horizontal:
        cut = min(left, img.width - right)
        left, right = cut, img.width - cut
    if op.equal_vertical:
        cut = min(top, img.height - bottom)
        top, bottom = cut, img.height - cut
    return left, top, right, bottom


def apply(img: Image.Image, op: Trim) -> Image.Image:
    keep = box(img, op)
    # An image that is all border is left alone: there is nothing better to return.
    return img if keep is None else img.crop(keep)


SPEC = OpSpec(
    name="trim",
    message=Trim,
    apply=apply,
    validate=validate,
)
