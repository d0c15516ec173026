"""A contact sheet: N frames spread over the video, in a grid of equal tiles."""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image

from services.imaging.video.decode import Video

_BACKGROUND = (0, 0, 0)


def layout(count: int, columns: int = 0) -> tuple[int, int]:
    """(columns, rows) of a grid of `count` tiles; 0 columns: as square as it gets."""
    cols = columns or math.ceil(math.sqrt(count))
    cols = min(cols, count)
    return cols, math.ceil(count / cols)


def tile_size(video: Video, tile_width: int) -> tuple[int, int]:
    width, height = video.header.width, video.header.height
    return tile_width, max(1, round(height * tile_width / width))


def sheet_size(
    video: Video, count: int, columns: int, tile_width: int, gap: int
) -> tuple[int, int]:
    cols, rows = layout(count, columns)
    tw, th = tile_size(video, tile_width)
    return cols * tw + (cols + 1) * gap, rows * th + (rows + 1) * gap


def contact_sheet(
    video: Video,
    count: int,
    *,
    columns: int = 0,
    tile_width: int = 320,
    gap: int = 4,
    background: tuple[int, int, int] = _BACKGROUND,
    check: Callable[[], None] = lambda: None,
) -> Image.Image:
    """`count` frames at the middle of `count` equal slices of the video, left to right and
    top to bottom. One seek per frame; each tile is shrunk as soon as it is decoded, so memory
    holds the sheet and one frame."""
    cols, _ = layout(count, columns)
    tw, th = tile_size(video, tile_width)
    sheet = Image.new("RGB", sheet_size(video, count, columns, tile_width, gap), background)
    for i in range(count):
        frame = video.frame_at((i + 0.5) / count * video.duration_s)
        tile = frame.image.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
        row, col = divmod(i, cols)
        sheet.paste(tile, (gap + col * (tw + gap), gap + row * (th + gap)))
        check()
    return sheet
