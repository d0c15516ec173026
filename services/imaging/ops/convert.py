"""Convert: choose the output format and how it is encoded.

Encoding happens once, at the end of the pipeline (services/imaging/encode.py), so Convert does
not touch pixels: the last Convert of a pipeline decides the format and its options. An option
that cannot apply to the chosen format is rejected, not ignored.
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Convert
from services.imaging.encode import (
    writable_formats,
)
from services.imaging.errors import UNSUPPORTED_FORMAT
from services.imaging.ops.base import Context, OpSpec, Size
from services.runtime.imageprobe import ImageFormat

JPEG, PNG, WEBP, AVIF, GIF = (
    ImageFormat.JPEG,
    ImageFormat.PNG,
    ImageFormat.WEBP,
    ImageFormat.AVIF,
    ImageFormat.GIF,
)


def validate(op: Convert, src: Size | None, ctx: Context) -> Size | None:
    if op.auto and not op.format:
        # The gateway resolved the Accept header and left the rest to the input's format, which
        # for a HEIF depends on alpha (encode.choose_format, the one rule): nothing to check yet.
        return src
    fmt = op.format
    if fmt not in writable_formats():
        names = ", ".join(ImageFormat.Name(f) for f in writable_formats())
        raise ctx.error("format", f"must be one of {names}", UNSUPPORTED_FORMAT)
    # Every other rule (ranges, options of some formats only, a lossy format for max_bytes) is
    # the proto's, checked before this (validation.check_rules); AVIF depends on the encoder.
    return src


def apply(img: Image.Image, op: Convert) -> Image.Image:
    return img


SPEC = OpSpec(
    name="convert",
    message=Convert,
    apply=apply,
    validate=validate,
)
