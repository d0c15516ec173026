"""Flatten: lay an image with transparency over an opaque background colour."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Flatten
from services.imaging.encode import flatten
from services.imaging.ops.base import WHITE, Context, OpSpec, Size, parse_colour


def validate(op: Flatten, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    return src


def apply(img: Image.Image, op: Flatten) -> Image.Image:
    r, g, b, _ = parse_colour(op.background) or WHITE
    return flatten(img, (r, g, b))


SPEC = OpSpec(
    name="flatten",
    message=Flatten,
    apply=apply,
    validate=validate,
)
