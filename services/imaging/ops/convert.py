"""Convert: choose the output format and how it is encoded.

Encoding happens once, at the end of the pipeline (services/imaging/encode.py), so Convert does
not touch pixels: the last Convert of a pipeline decides the format and its options. An option
that cannot apply to the chosen format is rejected, not ignored.
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Convert
from services.imaging.encode import (
    LOSSY,
    MAX_WEBP_EFFORT,
    writable_formats,
)
from services.imaging.errors import UNSUPPORTED_FORMAT
from services.imaging.ops.base import Context, OpSpec, Size
from services.runtime.imageprobe import Format, ImageFormat

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
    if op.quality > 100:
        raise ctx.error("quality", "must be between 1 and 100 (0 for the default)")
    # A quality for a lossless format is ignored, as it always was: clients send one quality
    # for every format they ask for.
    lossy = fmt in LOSSY and not op.lossless
    _only(ctx, "progressive", op.progressive, fmt, (JPEG, GIF))
    _only(ctx, "lossless", op.lossless, fmt, (WEBP, PNG, GIF, ImageFormat.TIFF))
    _only(ctx, "compression_level", op.HasField("compression_level"), fmt, (PNG,))
    if op.compression_level > 9:
        raise ctx.error("compression_level", "must be between 0 and 9")
    _only(ctx, "colors", op.colors > 0, fmt, (PNG, GIF))
    if op.colors and not 2 <= op.colors <= 256:
        raise ctx.error("colors", "must be between 2 and 256 (0 for none)")
    _only(ctx, "speed", op.HasField("speed"), fmt, (AVIF,))
    if op.speed > 10:
        raise ctx.error("speed", "must be between 0 and 10")
    _only(ctx, "effort", op.HasField("effort"), fmt, (WEBP,))
    if op.effort > MAX_WEBP_EFFORT:
        raise ctx.error("effort", f"must be between 0 and {MAX_WEBP_EFFORT}")
    if op.max_bytes and not lossy:
        raise ctx.error("max_bytes", f"needs a lossy format, not {_lossless_name(op)}")
    with_metadata = tuple(f for f in writable_formats() if f != GIF)
    _only(ctx, "keep_icc", op.keep_icc, fmt, with_metadata)
    _only(ctx, "keep_copyright", op.keep_copyright, fmt, with_metadata)
    _only(ctx, "provenance", op.provenance, fmt, with_metadata)
    return src


def _lossless_name(op: Convert) -> str:
    return "lossless WEBP" if op.format == WEBP else ImageFormat.Name(op.format)


def _only(ctx: Context, field: str, used: bool, fmt: Format, formats: tuple[Format, ...]) -> None:
    if used and fmt not in formats:
        names = ", ".join(ImageFormat.Name(f) for f in formats)
        raise ctx.error(field, f"applies to {names} only, not {ImageFormat.Name(fmt)}")


def apply(img: Image.Image, op: Convert) -> Image.Image:
    return img


SPEC = OpSpec(
    name="convert",
    message=Convert,
    apply=apply,
    validate=validate,
)
