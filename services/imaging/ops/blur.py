"""Blur: a Gaussian blur of the whole image."""

from __future__ import annotations

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Blur
from services.imaging.ops.base import Context, OpSpec, Size, filtered


def validate(op: Blur, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
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
