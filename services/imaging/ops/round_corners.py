"""Round corners: make the corners transparent (or a colour) along quarter circles."""

from __future__ import annotations

from PIL import Image, ImageChops, ImageDraw

from pixmesh.common.v1.operations_pb2 import RoundCorners
from services.imaging.ops.base import (
    TRANSPARENT,
    Context,
    OpSpec,
    Size,
    canvas,
    parse_colour,
    paste,
)

# The corner is drawn this many times larger, then box-filtered down: an anti-aliased edge.
_SUPERSAMPLE = 4


def validate(op: RoundCorners, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    if op.radius > ctx.max_output_dimension:
        raise ctx.error("radius", f"must be at most {ctx.max_output_dimension}")
    ctx.colour("background", op.background)
    return src


def corner_mask(size: tuple[int, int], radius: int) -> Image.Image:
    """An L mask of `size`: 255 inside the rounded rectangle, 0 outside, smooth in between."""
    r = min(radius, size[0] // 2, size[1] // 2)
    mask = Image.new("L", size, 255)
    if r == 0:
        return mask
    big = r * _SUPERSAMPLE
    quarter = Image.new("L", (big, big), 0)
    ImageDraw.Draw(quarter).ellipse((0, 0, 2 * big - 1, 2 * big - 1), fill=255)
    corner = quarter.resize((r, r), Image.Resampling.BOX)  # the top-left corner
    w, h = size
    mask.paste(corner, (0, 0))
    mask.paste(corner.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (w - r, 0))
    mask.paste(corner.transpose(Image.Transpose.FLIP_TOP_BOTTOM), (0, h - r))
    mask.paste(corner.transpose(Image.Transpose.ROTATE_180), (w - r, h - r))
    return mask


def apply(img: Image.Image, op: RoundCorners) -> Image.Image:
    mask = corner_mask(img.size, op.radius)
    shaped = img.convert("LA" if img.mode in ("L", "LA") else "RGBA")
    shaped.putalpha(ImageChops.multiply(shaped.getchannel("A"), mask))
    colour = parse_colour(op.background) or TRANSPARENT
    if colour[3] == 0:
        return shaped
    return paste(canvas(img, img.size, colour), shaped, (0, 0))


SPEC = OpSpec(
    name="round_corners",
    message=RoundCorners,
    apply=apply,
    validate=validate,
)
