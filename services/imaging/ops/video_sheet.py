"""VideoSheet: a contact sheet of a video (services/imaging/video/sheet.py); `apply` is never
given pixels: the video runner makes the sheet, then the job's other operations run on it."""

from __future__ import annotations

import math

from PIL import Image

from pixmesh.common.v1.operations_pb2 import VideoSheet
from services.imaging.ops.base import Context, OpSpec, Size

DEFAULT_COUNT = 9
DEFAULT_TILE_WIDTH = 320


def count(op: VideoSheet) -> int:
    return op.count or DEFAULT_COUNT


def grid(op: VideoSheet) -> tuple[int, int]:
    """(columns, rows) of the sheet."""
    n = count(op)
    cols = min(op.columns or math.ceil(math.sqrt(n)), n)
    return cols, math.ceil(n / cols)


def size(op: VideoSheet, frame: Size) -> Size:
    cols, rows = grid(op)
    tile_w = op.tile_width or DEFAULT_TILE_WIDTH
    tile_h = max(1, round(frame.height * tile_w / frame.width))
    return Size(cols * tile_w + (cols + 1) * op.gap, rows * tile_h + (rows + 1) * op.gap)


def validate(op: VideoSheet, src: Size | None, ctx: Context) -> Size | None:
    if src is None:
        return None
    out = size(op, src)
    if max(out.width, out.height) > ctx.max_output_dimension:
        raise ctx.error(
            "",
            f"the sheet would be {out.width}x{out.height}; the limit is "
            f"{ctx.max_output_dimension} pixels a side (fewer columns or smaller tiles)",
        )
    return out


def apply(img: Image.Image, op: VideoSheet) -> Image.Image:
    return img


SPEC = OpSpec(
    name="video_sheet",
    message=VideoSheet,
    apply=apply,
    validate=validate,
)
