"""Adjust: brightness, contrast and saturation, as percentages around "unchanged"."""

from __future__ import annotations

from PIL import Image, ImageEnhance

from pixmesh.common.v1.operations_pb2 import Adjust
from services.imaging.ops.base import Context, OpSpec, Size

# Applied in this order, each a blend with a degenerate image (Pillow's ImageEnhance, which
# leaves alpha alone): black for brightness, the mean grey for contrast, the greyscale image for
# saturation. -100 is the degenerate image itself, 100 twice as far from it.
_ENHANCERS = (
    ("brightness", ImageEnhance.Brightness),
    ("contrast", ImageEnhance.Contrast),
    ("saturation", ImageEnhance.Color),
)


def validate(op: Adjust, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return src


def apply(img: Image.Image, op: Adjust) -> Image.Image:
    for field, enhancer in _ENHANCERS:
        value = getattr(op, field)
        if value:
            img = enhancer(img).enhance(1 + value / 100)
    return img


SPEC = OpSpec(
    name="adjust",
    message=Adjust,
    apply=apply,
    validate=validate,
)
