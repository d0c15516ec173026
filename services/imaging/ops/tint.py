"""Tint: multiply the image by a colour, blended with the original by strength.

Every rule of its parameters is in the proto (Tint's buf.validate annotations), and so is its
ListOperations entry (OpSpec.info): nothing here but the pixels.
"""

from __future__ import annotations

from PIL import Image, ImageChops

from pixmesh.common.v1.operations_pb2 import Tint
from services.imaging.ops.base import Context, OpSpec, Size, on_colour, parse_colour


def validate(op: Tint, src: Size | None, ctx: Context) -> Size | None:
    return src


def apply(img: Image.Image, op: Tint) -> Image.Image:
    colour = parse_colour(op.color)
    assert colour is not None  # the proto's rule: "#rrggbb", required
    strength = op.strength or 1.0

    def tint(rgb: Image.Image) -> Image.Image:
        rgb = rgb.convert("RGB")  # grey in, colour out
        tinted = ImageChops.multiply(rgb, Image.new("RGB", rgb.size, colour[:3]))
        return Image.blend(rgb, tinted, strength)

    return on_colour(img, tint)


SPEC = OpSpec("tint", Tint, apply, validate)
