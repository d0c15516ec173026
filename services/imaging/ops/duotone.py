"""Duotone: map brightness onto a gradient between two colours; sepia by default."""

from __future__ import annotations

from PIL import Image, ImageOps

from pixmesh.common.v1.operations_pb2 import Duotone
from services.imaging.ops.base import Context, OpSpec, Size, on_colour, parse_colour

SEPIA_SHADOW = "#2b1a0e"
SEPIA_HIGHLIGHT = "#fff1d8"


def validate(op: Duotone, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return src


def apply(img: Image.Image, op: Duotone) -> Image.Image:
    shadow = parse_colour(op.shadow or SEPIA_SHADOW)
    highlight = parse_colour(op.highlight or SEPIA_HIGHLIGHT)
    assert shadow is not None and highlight is not None
    return on_colour(
        img, lambda colour: ImageOps.colorize(colour.convert("L"), shadow[:3], highlight[:3])
    )


SPEC = OpSpec(
    name="duotone",
    message=Duotone,
    apply=apply,
    validate=validate,
)
