"""The encode step: pick the output format and write it, with the options of the last Convert.

Metadata never reaches an encoder on its own: the pipeline's strip step empties `image.info`, and
what an output keeps (the ICC profile with Convert.keep_icc, the copyright EXIF with
keep_copyright) is handed to the encoder explicitly.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from PIL import Image, PngImagePlugin, TiffImagePlugin, features

from pixmesh.common.v1.operations_pb2 import Convert
from services.runtime.imageprobe import Format, ImageFormat, pillow_name

DEFAULT_QUALITY: dict[Format, int] = {
    ImageFormat.JPEG: 82,
    ImageFormat.WEBP: 80,
    ImageFormat.AVIF: 60,
}
# Formats whose quality can be searched for Convert.max_bytes (WEBP only when lossy).
LOSSY = frozenset(DEFAULT_QUALITY)
# Formats that hold an animation; the others get one frame or the pipeline refuses.
ANIMATED = frozenset({ImageFormat.GIF, ImageFormat.WEBP, ImageFormat.PNG, ImageFormat.AVIF})
# libavif speed 0..10: 8 is a few times faster than the default 6 for a few percent more bytes,
# the right trade on 2-core workers.
AVIF_SPEED = 8
# libwebp's `method` 0..6 (Convert.effort), Pillow's and libwebp's default: 4. On an 800x600 q80
# encode, 2 takes half the time for ~4% more bytes, 0 a quarter for ~27% more (BENCHMARKS.md,
# "Imaging"); 5 and 6 search harder for a few percent fewer bytes. A deployment's default is
# the imaging setting PIXMESH_WEBP_EFFORT.
WEBP_EFFORT = 4
MAX_WEBP_EFFORT = 6
PNG_COMPRESSION = 6
MIN_QUALITY = 1
_WHITE = (255, 255, 255)
# EXIF tags Convert.keep_copyright keeps.
COPYRIGHT_TAGS = (0x8298, 0x013B)  # Copyright, Artist


class MaxBytesUnreachable(Exception):
    """Even the lowest quality gives more bytes than Convert.max_bytes allows."""

    def __init__(self, smallest: int) -> None:
        super().__init__(f"the smallest encoding is {smallest} bytes")
        self.smallest = smallest


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


def encode(
    image: Image.Image | Sequence[Image.Image],
    fmt: Format,
    options: Convert | None = None,
    *,
    durations: Sequence[int] = (),
    loop: int | None = None,
    icc: bytes | None = None,
    exif: bytes | None = None,
    webp_effort: int = WEBP_EFFORT,
    xmp: bytes | None = None,
) -> bytes:
    """Encode one image, or the frames of an animation (mode L, LA, RGB or RGBA).

    `options` is the Convert that chose `fmt` (quality 0 picks the format's default);
    `durations` (ms per frame) and `loop` (None: play once) are for animations; `icc` and
    `exif` are written as they are (GIF has room for neither); `webp_effort` is the WebP effort
    when options.effort is unset. Raises MaxBytesUnreachable when options.max_bytes cannot be
    met (the search encodes at the same effort).
    """
    frames = [image] if isinstance(image, Image.Image) else list(image)
    opts = options or Convert()
    prepared = [_prepare(frame, fmt, opts) for frame in frames]

    def save(quality: int) -> bytes:
        params = _params(fmt, opts, quality, webp_effort)
        if fmt != ImageFormat.GIF:
            # Always given, even empty: some encoders fall back to `image.info` otherwise.
            params.update(icc_profile=icc or b"", exif=exif or b"")
        if xmp:
            params.update(_xmp(fmt, xmp))
        if len(prepared) > 1:
            params.update(_animation(fmt, prepared, durations, loop))
        out = io.BytesIO()
        prepared[0].save(out, format=pillow_name(fmt), **params)
        return out.getvalue()

    quality = opts.quality or DEFAULT_QUALITY.get(fmt, 0)
    if not opts.max_bytes:
        return save(quality)
    return _within(opts.max_bytes, save, quality)


def _within(limit: int, save: Callable[[int], bytes], highest: int) -> bytes:
    """The output at the highest quality that fits in `limit` bytes (a binary search).

    Size grows with quality for libjpeg, libwebp and libavif; a local wobble at worst makes the
    search settle one step lower than it could.
    """
    data = save(highest)
    if len(data) <= limit:
        return data
    smallest = len(data)
    best: bytes | None = None
    low, high = MIN_QUALITY, highest - 1
    while low <= high:
        mid = (low + high) // 2
        data = save(mid)
        smallest = min(smallest, len(data))
        if len(data) <= limit:
            best, low = data, mid + 1
        else:
            high = mid - 1
    if best is None:
        raise MaxBytesUnreachable(smallest)
    return best


def _params(fmt: Format, opts: Convert, quality: int, webp_effort: int) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if fmt == ImageFormat.JPEG:
        params.update(quality=quality, progressive=opts.progressive)
    elif fmt == ImageFormat.WEBP:
        # Lossless WebP reads `quality` as effort too: leave it at libwebp's default, `method`
        # alone says how hard to try.
        params.update({"lossless": True} if opts.lossless else {"quality": quality})
        params.update(method=opts.effort if opts.HasField("effort") else webp_effort)
    elif fmt == ImageFormat.AVIF:
        speed = opts.speed if opts.HasField("speed") else AVIF_SPEED
        params.update(quality=quality, speed=speed)
    elif fmt == ImageFormat.PNG:
        level = opts.compression_level if opts.HasField("compression_level") else PNG_COMPRESSION
        params.update(compress_level=level)
    elif fmt == ImageFormat.GIF:
        params.update(interlace=opts.progressive)
    elif fmt == ImageFormat.TIFF:
        params.update(compression="tiff_adobe_deflate")
    return params


def _xmp(fmt: Format, xmp: bytes) -> dict[str, Any]:
    """Save parameters that embed an XMP packet (GIF has no room: none)."""
    if fmt in (ImageFormat.JPEG, ImageFormat.WEBP, ImageFormat.AVIF):
        return {"xmp": xmp}
    if fmt == ImageFormat.PNG:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=False)
        return {"pnginfo": info}
    if fmt == ImageFormat.TIFF:
        ifd = TiffImagePlugin.ImageFileDirectory_v2()
        ifd[700] = xmp  # XMLPacket
        ifd.tagtype[700] = 1  # BYTE
        return {"tiffinfo": ifd}
    return {}


def _animation(
    fmt: Format, frames: Sequence[Image.Image], durations: Sequence[int], loop: int | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"save_all": True, "append_images": list(frames[1:])}
    if durations:
        params["duration"] = list(durations)
    if loop is not None and fmt != ImageFormat.AVIF:  # AVIF sequences always loop
        params["loop"] = loop
    if fmt == ImageFormat.GIF:
        # Every frame is a whole picture: with transparency, each must clear the previous one.
        alpha = any(f.mode in ("LA", "RGBA", "PA") or "transparency" in f.info for f in frames)
        params["disposal"] = 2 if alpha else 1
    return params


def _prepare(img: Image.Image, fmt: Format, opts: Convert) -> Image.Image:
    if fmt == ImageFormat.JPEG:
        return flatten(img)
    if opts.colors and fmt == ImageFormat.PNG:
        return quantize(img, opts.colors)
    if opts.colors and fmt == ImageFormat.GIF:
        return quantize_gif(img, opts.colors)
    return img


def quantize(img: Image.Image, colors: int) -> Image.Image:
    """A palette image of at most `colors` colours, alpha kept in the palette (PNG's tRNS)."""
    if img.mode in ("LA", "RGBA"):
        # Pillow's median cut cannot weigh alpha; the octree can.
        return img.convert("RGBA").quantize(colors, method=Image.Quantize.FASTOCTREE)
    return img.convert("RGB").quantize(colors, method=Image.Quantize.MEDIANCUT)


def quantize_gif(img: Image.Image, colors: int) -> Image.Image:
    """Like `quantize`, for GIF's one fully transparent palette entry: pixels under half
    opacity take the last entry, the others share the rest."""
    if img.mode not in ("LA", "RGBA"):
        return quantize(img, colors)
    transparent = colors - 1
    out = img.convert("RGB").quantize(transparent, method=Image.Quantize.MEDIANCUT)
    palette = (out.getpalette() or [])[: 3 * transparent]
    out.putpalette(palette + [0] * (3 * transparent - len(palette)) + [0, 0, 0])
    out.paste(transparent, mask=img.getchannel("A").point(lambda a: 255 if a < 128 else 0))
    out.info["transparency"] = transparent
    return out


def flatten(img: Image.Image, colour: tuple[int, int, int] = _WHITE) -> Image.Image:
    """Lay an image with alpha over an opaque colour, for formats without transparency."""
    if img.mode not in ("LA", "RGBA"):
        return img
    grey = img.mode == "LA" and colour[0] == colour[1] == colour[2]
    mode = "L" if grey else "RGB"
    canvas = Image.new(mode, img.size, colour[0] if grey else colour)
    canvas.paste(img.convert(mode), mask=img.getchannel("A"))
    canvas.info = img.info
    return canvas


def copyright_exif(exif: Image.Exif) -> bytes | None:
    """An EXIF block with only the source's copyright and artist, or None if it has neither."""
    kept = Image.Exif()
    for tag in COPYRIGHT_TAGS:
        if exif.get(tag):
            kept[tag] = exif[tag]
    return kept.tobytes() if len(kept) else None
