"""Pixelate: replace the image by square blocks of their average colour."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Pixelate
from services.imaging.ops.base import Context, OpSpec, Size, has_alpha


def validate(op: Pixelate, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return src


def pixelate(img: Image.Image, block: int) -> Image.Image:
    """Blocks of `block` pixels from the top-left corner (the last row/column may be narrower)."""
    # reduce() averages each block, the partial ones at the edges over their own pixels only;
    # with alpha it works on premultiplied colours, so transparent pixels add no colour.
    work = img.convert("RGBa" if img.mode == "RGBA" else "La") if has_alpha(img) else img
    small = work.reduce(block)
    big = small.resize((small.width * block, small.height * block), Image.Resampling.NEAREST)
    return big.crop((0, 0, img.width, img.height)).convert(img.mode)


def apply(img: Image.Image, op: Pixelate) -> Image.Image:
    return pixelate(img, op.size)


SPEC = OpSpec(
    name="pixelate",
    message=Pixelate,
    apply=apply,
    validate=validate,
)
