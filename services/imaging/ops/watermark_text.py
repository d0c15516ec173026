"""Text watermark: draw text over the image, with Pillow's bundled font (no files needed)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from pixmesh.common.v1.operations_pb2 import WatermarkText
from services.imaging.ops import overlay
from services.imaging.ops.base import (
    WHITE,
    Context,
    OpSpec,
    Size,
    parse_colour,
)

MIN_SIZE, MAX_SIZE = 6, 1024


def validate(op: WatermarkText, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    overlay.validate(ctx, op)
    return src


def render(op: WatermarkText, size: int) -> Image.Image:
    """The text on a transparent patch just large enough to hold it."""
    font = ImageFont.load_default(size)
    outline = parse_colour(op.outline_color)
    stroke = max(1, size // 16) if outline else 0
    measure = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = measure.multiline_textbbox(
        (0, 0), op.text, font=font, stroke_width=stroke
    )
    size_px = (max(1, math.ceil(right - left)), max(1, math.ceil(bottom - top)))
    patch = Image.new("RGBA", size_px, (0, 0, 0, 0))
    ImageDraw.Draw(patch).multiline_text(
        (-left, -top),
        op.text,
        font=font,
        fill=parse_colour(op.color) or WHITE,
        stroke_width=stroke,
        stroke_fill=outline,
    )
    return patch


def apply(img: Image.Image, op: WatermarkText) -> Image.Image:
    size = op.size or max(12, min(img.size) // 20)
    return overlay.stamp(img, render(op, size), op)


SPEC = OpSpec(
    name="watermark_text",
    message=WatermarkText,
    apply=apply,
    validate=validate,
)
