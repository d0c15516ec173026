"""Redact: blur or pixelate rectangles of the image (faces, number plates, ...)."""

from __future__ import annotations

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Redact
from services.imaging.ops.base import Context, OpSpec, Size, filtered
from services.imaging.ops.pixelate import pixelate

Method = Redact.Method
DEFAULT_STRENGTH = 16


def validate(op: Redact, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    for i, r in enumerate(op.regions):
        # Rejected rather than clipped, like crop: coordinates off the image are a client bug.
        if src is not None and (r.x + r.width > src.width or r.y + r.height > src.height):
            raise ctx.error(f"regions[{i}]", f"must lie inside the {src.width}x{src.height} image")
    return src


def apply(img: Image.Image, op: Redact) -> Image.Image:
    strength = op.strength or DEFAULT_STRENGTH
    out = img.copy()
    for r in op.regions:
        box = (r.x, r.y, r.x + r.width, r.y + r.height)
        part = img.crop(box)
        if op.method == Method.PIXELATE:
            part = pixelate(part, max(2, strength))
        else:
            part = filtered(part, ImageFilter.GaussianBlur(strength))
        out.paste(part, box)
    return out


SPEC = OpSpec(
    name="redact",
    message=Redact,
    apply=apply,
    validate=validate,
)
