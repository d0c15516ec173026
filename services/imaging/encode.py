"""The encode step: pick the output format and write it, with no metadata but the colour profile.

Metadata never reaches an encoder: the pipeline's strip step leaves only the ICC profile in
`image.info`, and it is handed to the encoders explicitly (some read `info`, some only their
arguments).
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

from PIL import Image, features

from services.runtime.imageprobe import Format, ImageFormat, pillow_name

DEFAULT_QUALITY: dict[Format, int] = {
    ImageFormat.JPEG: 82,
    ImageFormat.WEBP: 80,
    ImageFormat.AVIF: 60,
}
# libavif speed 0..10: 8 is a few times faster than the default 6 for a few percent more bytes,
# the right trade on 2-core workers.
AVIF_SPEED = 8
_WHITE = (255, 255, 255)


@cache
def writable_formats() -> tuple[Format, ...]:
    formats = [ImageFormat.JPEG, ImageFormat.PNG, ImageFormat.WEBP, ImageFormat.GIF]
    formats.append(ImageFormat.TIFF)
    if features.check("avif"):
        formats.append(ImageFormat.AVIF)
    return tuple(sorted(formats))


def choose_format(requested: Format | None, source: Format, has_alpha: bool | None) -> Format:
    """The output format: the requested one, else the source's if we can write it.

    BMP and ICO are lossless, so they become PNG; HEIF photos become JPEG unless they carry
    alpha (`has_alpha` None means not known yet, before decoding).
    """
    if requested:
        return requested
    if source in writable_formats():
        return source
    if source == ImageFormat.HEIF and not has_alpha:
        return ImageFormat.JPEG
    return ImageFormat.PNG


def encode(img: Image.Image, fmt: Format, quality: int = 0) -> bytes:
    """Encode `img` (mode L, LA, RGB or RGBA); quality 0 picks the format's default."""
    params: dict[str, Any] = {}
    if fmt in DEFAULT_QUALITY:
        params["quality"] = quality or DEFAULT_QUALITY[fmt]
    if fmt == ImageFormat.JPEG:
        img = flatten(img)
    elif fmt == ImageFormat.AVIF:
        params["speed"] = AVIF_SPEED
    elif fmt == ImageFormat.TIFF:
        params["compression"] = "tiff_adobe_deflate"
    icc = img.info.get("icc_profile")
    if icc and fmt != ImageFormat.GIF:
        params["icc_profile"] = icc
    out = io.BytesIO()
    img.save(out, format=pillow_name(fmt), **params)
    return out.getvalue()


def flatten(img: Image.Image) -> Image.Image:
    """Lay an image with alpha over white, for formats without transparency."""
    if img.mode not in ("LA", "RGBA"):
        return img
    mode = img.mode[:-1]
    canvas = Image.new(mode, img.size, 255 if mode == "L" else _WHITE)
    canvas.paste(img.convert(mode), mask=img.getchannel("A"))
    canvas.info = img.info
    return canvas
