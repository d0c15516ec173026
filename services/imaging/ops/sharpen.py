"""Sharpen: an unsharp mask, the usual way to restore crispness after a downscale."""

from __future__ import annotations

import math

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Sharpen
from services.imaging.ops.base import Context, OpSpec, Size, on_colour


def validate(op: Sharpen, src: Size | None, ctx: Context) -> Size | None:
    if not math.isfinite(op.sigma) or not (op.sigma == 0 or 0.1 <= op.sigma <= 10):
        raise ctx.error("sigma", "must be between 0.1 and 10 (0 for 1)")
    if not math.isfinite(op.amount) or not 0 <= op.amount <= 10:
        raise ctx.error("amount", "must be between 0 and 10 (0 for 1)")
    if op.threshold > 255:
        raise ctx.error("threshold", "must be between 0 and 255")
    return src


def apply(img: Image.Image, op: Sharpen) -> Image.Image:
    mask = ImageFilter.UnsharpMask(
        radius=op.sigma or 1.0, percent=round((op.amount or 1.0) * 100), threshold=op.threshold
    )
    # Sharpen the colours only: a sharpened alpha channel grows halos around shapes.
    return on_colour(img, lambda colour: colour.filter(mask))


SPEC = OpSpec(
    name="sharpen",
    message=Sharpen,
    apply=apply,
    validate=validate,
)
