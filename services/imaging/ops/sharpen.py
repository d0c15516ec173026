"""Sharpen: an unsharp mask, the usual way to restore crispness after a downscale."""

from __future__ import annotations

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Sharpen
from services.imaging.ops.base import Context, OpSpec, Size, on_colour


def validate(op: Sharpen, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
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
