"""Flip: mirror the image horizontally or vertically (lossless)."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Flip
from services.imaging.ops.base import Context, OpSpec, Size

Axis = Flip.Axis


def validate(op: Flip, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return src


def apply(img: Image.Image, op: Flip) -> Image.Image:
    if op.axis == Axis.VERTICAL:
        return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


SPEC = OpSpec(
    name="flip",
    message=Flip,
    apply=apply,
    validate=validate,
)
