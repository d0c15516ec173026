"""Blur: a Gaussian blur of the whole image."""

from __future__ import annotations

import math

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Blur
from services.imaging.ops.base import Context, OpSpec, Size, filtered

MAX_SIGMA = 100.0


def validate(op: Blur, src: Size | None, ctx: Context) -> Size | None:
    if not math.isfinite(op.sigma) or not 0.1 <= op.sigma <= MAX_SIGMA:
        raise ctx.error("sigma", f"must be between 0.1 and {MAX_SIGMA:g}")
    return src


def apply(img: Image.Image, op: Blur) -> Image.Image:
    # Pillow's radius is the standard deviation (its box-blur passes approximate the Gaussian).
    return filtered(img, ImageFilter.GaussianBlur(op.sigma))


SPEC = OpSpec(
    name="blur",
    message=Blur,
    apply=apply,
    validate=validate,
)
