"""Redact: blur or pixelate rectangles of the image (faces, number plates, ...)."""

from __future__ import annotations

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Redact
from services.imaging.ops.base import Context, OpSpec, Size, filtered
from services.imaging.ops.pixelate import pixelate

Method = Redact.Method
MAX_REGIONS = 64
MAX_STRENGTH = 256
DEFAULT_STRENGTH = 16


def validate(op: Redact, src: Size | None, ctx: Context) -> Size | None:
    if op.method not in Method.values():
        raise ctx.error("method", f"unknown method {op.method}")
    if op.strength > MAX_STRENGTH:
        raise ctx.error("strength", f"must be at most {MAX_STRENGTH} (0: {DEFAULT_STRENGTH})")
    if not 1 <= len(op.regions) <= MAX_REGIONS:
        raise ctx.error("regions", f"give 1..{MAX_REGIONS} regions")
    for i, r in enumerate(op.regions):
        if r.width == 0 or r.height == 0:
            raise ctx.error(f"regions[{i}]", "width and height must be at least 1")
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
