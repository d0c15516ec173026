"""Convert: choose the output format and quality.

Encoding happens once, at the end of the pipeline (services/imaging/encode.py), so Convert does
not touch pixels: the last Convert of a pipeline decides the format and quality.
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Convert
from services.imaging.encode import writable_formats
from services.imaging.errors import UNSUPPORTED_FORMAT
from services.imaging.ops.base import Context, OpSpec, Size, describe
from services.runtime.imageprobe import ImageFormat


def validate(op: Convert, src: Size | None, ctx: Context) -> Size | None:
    if op.format not in writable_formats():
        names = ", ".join(ImageFormat.Name(f) for f in writable_formats())
        raise ctx.error("format", f"must be one of {names}", UNSUPPORTED_FORMAT)
    if op.quality > 100:
        raise ctx.error("quality", "must be between 1 and 100 (0 for the default)")
    return src


def apply(img: Image.Image, op: Convert) -> Image.Image:
    return img


SPEC = OpSpec(
    name="convert",
    message=Convert,
    apply=apply,
    validate=validate,
    info=describe(
        "convert",
        Convert,
        "Encode the output in this format; the last convert of a pipeline wins. Without one the "
        "output keeps the input's format (BMP and ICO become PNG, HEIF becomes JPEG).",
        format=("Output format.", "JPEG, PNG, WEBP, AVIF, GIF, TIFF"),
        quality=(
            "Lossy quality; ignored by PNG, GIF and TIFF.",
            "0 (default: JPEG 82, WEBP 80, AVIF 60) or 1..100",
        ),
    ),
)
