"""Watermark: draw a small image, sent inline with the operation, over the image."""

from __future__ import annotations

import functools
import struct

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Watermark
from services.imaging.errors import IMAGE_CORRUPT
from services.imaging.ops import overlay
from services.imaging.ops.base import Context, OpSpec, Size, round_half_up
from services.runtime import imageprobe
from services.runtime.errors import InvalidArgument

MAX_BYTES = 256 * 1024
MAX_PIXELS = 4_000_000
_LIMITS = imageprobe.ProbeLimits(MAX_BYTES, MAX_PIXELS, max_frames=1)
# What a Pillow decoder raises on bad data (the pipeline's decode step catches the same).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


@functools.lru_cache(maxsize=8)
def decoded(data: bytes) -> Image.Image:
    """The watermark as RGBA, decoded once per process for the frames and jobs that share it.

    Raises InvalidArgument. The returned image is shared: never modify it in place.
    """
    _, image = imageprobe.open_image(data, _LIMITS)
    with image:
        try:
            image.load()
        except _DECODE_ERRORS as exc:
            raise InvalidArgument(message="the image is corrupt", reason=IMAGE_CORRUPT) from exc
        return image.convert("RGBA")


def validate(op: Watermark, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    try:
        decoded(op.image)
    except InvalidArgument as exc:
        raise ctx.error("image", exc.message, exc.reason) from None
    overlay.validate(ctx, op)
    return src


def apply(img: Image.Image, op: Watermark) -> Image.Image:
    patch = decoded(op.image)
    if op.scale:
        width = max(1, round_half_up(img.width * op.scale))
        height = max(1, round_half_up(patch.height * width / patch.width))
        patch = patch.resize((width, height), Image.Resampling.LANCZOS)
    return overlay.stamp(img, patch, op)


SPEC = OpSpec(
    name="watermark",
    message=Watermark,
    apply=apply,
    validate=validate,
)
