"""Gravity: where a smaller rectangle sits inside a larger one (shared by several operations).

Crop and fill place the part of the image they keep; extend and the watermarks place the image
or the watermark on a canvas. Compass points and the focus point are pure geometry; SMART looks
at the pixels, so it needs the image and only makes sense when choosing a part of it.
"""

from __future__ import annotations

from PIL import Image, ImageFilter

from pixmesh.common.v1.operations_pb2 import Gravity
from services.imaging.errors import ANIMATION_UNSUPPORTED
from services.imaging.ops.base import Context

Anchor = Gravity.Anchor

# Where the inner rectangle's free room goes, as fractions (0: all of it right/below).
_COMPASS = {
    Anchor.ANCHOR_UNSPECIFIED: (0.5, 0.5),
    Anchor.CENTER: (0.5, 0.5),
    Anchor.NORTH: (0.5, 0.0),
    Anchor.NORTH_EAST: (1.0, 0.0),
    Anchor.EAST: (1.0, 0.5),
    Anchor.SOUTH_EAST: (1.0, 1.0),
    Anchor.SOUTH: (0.5, 1.0),
    Anchor.SOUTH_WEST: (0.0, 1.0),
    Anchor.WEST: (0.0, 0.5),
    Anchor.NORTH_WEST: (0.0, 0.0),
}
# SMART scores a thumbnail this large on its longer side: plenty to find the interesting part.
_SMART_SIDE = 256


def validate(gravity: Gravity, ctx: Context, field: str) -> None:
    """What the proto's rules of `gravity` (the field `field` of the operation; checked before,
    by validation.check_rules) cannot know: whether the image is an animation."""
    if gravity.anchor == Anchor.SMART and ctx.animated:
        # Each frame would pick its own region and the animation would jitter.
        raise ctx.error(
            f"{field}.anchor", "SMART cannot be used on an animation", ANIMATION_UNSUPPORTED
        )


def place(
    gravity: Gravity,
    outer: tuple[float, float],
    inner: tuple[float, float],
    image: Image.Image | None = None,
) -> tuple[float, float]:
    """Top-left corner of `inner` inside `outer` (both width, height).

    `image` is what `outer` shows (at any scale), for SMART; without it SMART is centred, which
    is right for predicting sizes. An `inner` larger than `outer` gets a negative offset.
    """
    room_x, room_y = outer[0] - inner[0], outer[1] - inner[1]
    anchor = gravity.anchor
    if anchor == Anchor.FOCUS_POINT:
        # Centre the inner rectangle on the point, then push it back inside.
        return (
            _clamp(gravity.x * outer[0] - inner[0] / 2, room_x),
            _clamp(gravity.y * outer[1] - inner[1] / 2, room_y),
        )
    if anchor == Anchor.SMART:
        if image is None:
            return room_x / 2, room_y / 2
        fx, fy = smart(image, inner[0] / outer[0], inner[1] / outer[1])
        return fx * room_x, fy * room_y
    fx, fy = _COMPASS[anchor]
    return fx * room_x, fy * room_y


def smart(image: Image.Image, width: float, height: float) -> tuple[float, float]:
    """Where a window of `width` x `height` (fractions of the image) is most interesting.

    Returns the window's offset as a fraction of the free room on each axis (0.5: centred).
    Interest is edge strength plus colour saturation (the two cheap signals of libvips'
    attention strategy); the window with the most interest wins, ties going to the centre.
    """
    import numpy as np  # here: the imaging service process imports this module, never runs it

    scale = min(1.0, _SMART_SIDE / max(image.size))
    small = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.BOX,
    )
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    edges = np.asarray(small.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255
    # Pillow's kernels copy the outermost pixels unfiltered: they are not edges.
    edges[[0, -1], :] = 0
    edges[:, [0, -1]] = 0
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    interest = edges + 0.5 * saturation
    h, w = interest.shape
    win_w = min(w, max(1, round(width * w)))
    win_h = min(h, max(1, round(height * h)))
    # Summed-area table: the interest inside every window position at once.
    table = np.zeros((h + 1, w + 1), dtype=np.float64)
    table[1:, 1:] = interest.cumsum(0).cumsum(1)
    sums = (
        table[win_h:, win_w:]
        - table[: h - win_h + 1, win_w:]
        - table[win_h:, : w - win_w + 1]
        + table[: h - win_h + 1, : w - win_w + 1]
    )
    ys, xs = np.mgrid[0 : sums.shape[0], 0 : sums.shape[1]]
    centre_y, centre_x = (sums.shape[0] - 1) / 2, (sums.shape[1] - 1) / 2
    # A penalty far below one pixel's worth of interest: it only breaks ties.
    score = sums - 1e-6 * (np.abs(ys - centre_y) + np.abs(xs - centre_x))
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    room_x, room_y = w - win_w, h - win_h
    return (float(x) / room_x if room_x else 0.5), (float(y) / room_y if room_y else 0.5)


def _clamp(value: float, room: float) -> float:
    return min(max(value, min(0.0, room)), max(0.0, room))
