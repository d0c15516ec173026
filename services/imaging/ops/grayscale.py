"""Grayscale: shades of grey (ITU-R 601 luma), alpha kept."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Grayscale
from services.imaging.ops.base import Context, OpSpec, Size, has_alpha


def validate(op: Grayscale, src: Size | None, ctx: Context) -> Size | None:
    return src


def apply(img: Image.Image, op: Grayscale) -> Image.Image:
    return img.convert("LA" if has_alpha(img) else "L")


SPEC = OpSpec(
    name="grayscale",
    message=Grayscale,
    apply=apply,
    validate=validate,
)
