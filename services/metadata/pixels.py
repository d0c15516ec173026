"""Everything computed from the pixels: colours, placeholders and perceptual hashes.

Only the first frame is decoded, upright (EXIF orientation applied, as the imaging service
outputs it), and only as large as needed: JPEG decodes at a reduced DCT scale (`draft`), and all
work happens on a thumbnail of at most 256 px. Transparent pixels are composited onto white for
everything except ThumbHash, which encodes alpha itself.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from pixmesh.common.v1 import metadata_pb2
from services.metadata import hashes, palette, placeholders

WORKING_SIZE: Final = 256
BLURHASH_SIZE: Final = 32
PALETTE_SIZE: Final = 5
PALETTE_WORKING_SIZE: Final = 128


@dataclass(frozen=True)
class PixelSummary:
    colors: metadata_pb2.Colors
    placeholders: metadata_pb2.Placeholders
    hashes: metadata_pb2.PerceptualHashes


def summarize(data: bytes, formats: list[str]) -> PixelSummary:
    """Decode the first frame of `data` and summarise it. Raises whatever Pillow raises on
    pixels it cannot decode (the caller notes it and keeps the header metadata)."""
    with Image.open(io.BytesIO(data), formats=formats) as image:
        # JPEG only: pick the smallest DCT scale still at least the working size (1/8 for most
        # photos of 6 MP and more: a 12 MP one decodes to 500x375). Twice the working size cost
        # ~5 ms more CPU per photo (decoding and resampling twice the pixels) for hashes within
        # 2 bits and colours within a level.
        image.draft("RGB", (WORKING_SIZE, WORKING_SIZE))
        image.load()
        # In place: an image already upright (most) is not copied at full size.
        ImageOps.exif_transpose(image, in_place=True)
        upright = _to_8bit(image)
        upright.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.LANCZOS)
        # An opaque image has no RGBA copy: compositing onto white would change nothing, and
        # ThumbHash's alpha is all 255 (see _placeholders).
        rgba = upright.convert("RGBA") if upright.has_transparency_data else None
        rgb = upright.convert("RGB") if rgba is None else _on_white(rgba)
    return PixelSummary(
        colors=colors(rgb),
        placeholders=_placeholders(rgb, rgba),
        hashes=metadata_pb2.PerceptualHashes(
            phash=hashes.to_hex(hashes.phash(rgb)), dhash=hashes.to_hex(hashes.dhash(rgb))
        ),
    )


def colors(rgb: Image.Image) -> metadata_pb2.Colors:
    # An exact integer sum (the same mean as summing float64s) from Pillow's per-band
    # histogram: ~0.1 ms where numpy's sum down the columns of a (pixels, 3) array took ~0.7.
    sums = np.asarray(rgb.histogram(), dtype=np.int64).reshape(3, 256) @ np.arange(256)
    out = metadata_pb2.Colors(average=_hex(sums / max(1, rgb.width * rgb.height)))
    # Median cut groups pixels into boxes of similar colour; the biggest boxes are the palette.
    # Over a copy of at most ~PALETTE_WORKING_SIZE px: a quarter of the pixels of the working
    # thumbnail, a quarter of the time (~23 ms less CPU per upload, a third of its indexing),
    # the same colours within a level or two and fractions within a percent. Pillow's median
    # cut, computed by `palette.median_cut` (the same values, ~8 ms less CPU per upload).
    factor = max(1, max(rgb.size) // PALETTE_WORKING_SIZE)
    sample = rgb.reduce(factor) if factor > 1 else rgb
    entries, counts = palette.median_cut(np.asarray(sample), PALETTE_SIZE)
    total = int(counts.sum()) or 1
    # Most pixels first; equal counts by the higher palette index, as sorting Pillow's
    # getcolors() in reverse ordered them.
    for count, index in sorted(((int(c), i) for i, c in enumerate(counts) if c), reverse=True):
        out.palette.add(color=_hex(entries[index]), fraction=round(count / total, 4))
    return out


def _placeholders(rgb: Image.Image, rgba: Image.Image | None) -> metadata_pb2.Placeholders:
    """`rgba` None: the image is opaque. Its ThumbHash is then taken from `rgb` with alpha 255
    added after resizing, the same pixels as resizing an RGBA copy (which Pillow does through
    premultiplied alpha, an identity at 255) for a third of the work."""
    small = rgb.copy()
    small.thumbnail((BLURHASH_SIZE, BLURHASH_SIZE), Image.Resampling.BILINEAR)
    x, y = (4, 3) if small.width >= small.height else (3, 4)
    tiny = (rgb if rgba is None else rgba).copy()
    side = placeholders.THUMBHASH_MAX_SIDE
    tiny.thumbnail((side, side), Image.Resampling.BILINEAR)
    return metadata_pb2.Placeholders(
        blurhash=placeholders.blurhash(np.asarray(small), x, y),
        thumbhash=placeholders.thumbhash(np.asarray(tiny.convert("RGBA"))),
    )


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _hex(values: Iterable[float]) -> str:
    r, g, b = (min(255, max(0, round(float(v)))) for v in values)
    return f"#{r:02x}{g:02x}{b:02x}"


def _to_8bit(image: Image.Image) -> Image.Image:
    """Pillow's convert() clips 16- and 32-bit samples to 0..255 instead of scaling them."""
    if image.mode.startswith("I;16") or image.mode == "I":
        scaled = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        # Float images have no fixed range: stretch whatever range this one has.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        span = high - low or 1.0
        return Image.fromarray(((values - low) / span * 255).astype(np.uint8), "L")
    return image
