"""Drawing a patch (a watermark image or rendered text) over an image: shared by the watermarks."""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Gravity, Watermark, WatermarkText
from services.imaging.ops import gravity
from services.imaging.ops.base import TRANSPARENT, Context, composite, has_alpha, round_half_up

# The watermarks: each has a position, margin, tile and opacity, which mean the same in both.
Overlay = Watermark | WatermarkText


def opacity(op: Overlay) -> float:
    return op.opacity if op.HasField("opacity") else 1.0


def validate(ctx: Context, op: Overlay) -> None:
    """The margin against the deployment's limit; the placement and opacity rules are the
    proto's, checked before this (validation.check_rules)."""
    if op.margin > ctx.max_output_dimension:
        raise ctx.error("margin", f"must be at most {ctx.max_output_dimension}")


def stamp(img: Image.Image, patch: Image.Image, op: Overlay) -> Image.Image:
    """`patch` (RGBA) faded to `op`'s opacity and drawn over `img` where `op` places it."""
    return draw(img, faded(patch, opacity(op)), op.position, op.margin, op.tile)


def faded(patch: Image.Image, opacity: float) -> Image.Image:
    """`patch` (RGBA) with its alpha multiplied by `opacity`."""
    if opacity >= 1.0:
        return patch
    out = patch.copy()
    out.putalpha(patch.getchannel("A").point(lambda a: round_half_up(a * opacity)))
    return out


def draw(
    img: Image.Image, patch: Image.Image, position: Gravity, margin: int, tile: bool
) -> Image.Image:
    """`patch` (RGBA) over `img`, placed by `position` inside `margin`, or tiled."""
    out = img.convert("RGBA")
    if tile:
        composite(out, _tiled(patch, margin, img.size), (0, 0))
    else:
        inner = (img.width - 2 * margin, img.height - 2 * margin)
        x, y = gravity.place(position, inner, patch.size)
        composite(out, patch, (margin + round_half_up(x), margin + round_half_up(y)))
    return out if has_alpha(img) else out.convert("RGB")


def _tiled(patch: Image.Image, margin: int, size: tuple[int, int]) -> Image.Image:
    """A layer of `size` covered with `patch` every (patch + margin) pixels from the top-left.

    Built by doubling a strip, so a tiny patch on a large image costs a few pastes, not one
    per tile.
    """
    strip = Image.new("RGBA", (patch.width + margin, patch.height + margin), TRANSPARENT)
    strip.paste(patch, (0, 0))
    for axis in (0, 1):
        while strip.size[axis] < size[axis]:
            grown = (
                (strip.width * 2, strip.height) if axis == 0 else (strip.width, strip.height * 2)
            )
            doubled = Image.new("RGBA", grown, TRANSPARENT)
            doubled.paste(strip, (0, 0))
            doubled.paste(strip, (strip.width, 0) if axis == 0 else (0, strip.height))
            strip = doubled
    return strip.crop((0, 0, *size))
