"""Sniff an upload's real format and read its header without decoding pixels.

Shared by the gateway (reject bad uploads before a job exists) and the imaging worker (the first
step of its pipeline). The client's Content-Type and file name are never trusted: the format comes
from the magic bytes, and Pillow is told to use that one plugin only, which also keeps the other
parsers out of reach of hostile input.

Limits are checked in a fixed order, cheapest first: bytes, format, header, pixels, frames. Pillow's
own `MAX_IMAGE_PIXELS` (see `configure_pillow`) is the second line of defence for whatever reaches a
decoder some other way (e.g. a PNG inside an ICO).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import TypeAlias

from PIL import ExifTags, Image, ImageFile, TiffImagePlugin, features

from pixmesh.common.v1 import image_pb2
from pixmesh.formats import sniff
from services.runtime.errors import InvalidArgument

ImageFormat = image_pb2.ImageFormat
Format: TypeAlias = image_pb2.ImageFormat.ValueType

EMPTY_IMAGE = "EMPTY_IMAGE"
UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
IMAGE_CORRUPT = "IMAGE_CORRUPT"
IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
TOO_MANY_FRAMES = "TOO_MANY_FRAMES"

# Pillow plugin name, MIME type and file extension of every format pixmesh knows.
_PILLOW = {
    ImageFormat.JPEG: "JPEG",
    ImageFormat.PNG: "PNG",
    ImageFormat.WEBP: "WEBP",
    ImageFormat.AVIF: "AVIF",
    ImageFormat.GIF: "GIF",
    ImageFormat.TIFF: "TIFF",
    ImageFormat.BMP: "BMP",
    ImageFormat.ICO: "ICO",
    ImageFormat.HEIF: "HEIF",
}
_MIME = {
    ImageFormat.JPEG: "image/jpeg",
    ImageFormat.PNG: "image/png",
    ImageFormat.WEBP: "image/webp",
    ImageFormat.AVIF: "image/avif",
    ImageFormat.GIF: "image/gif",
    ImageFormat.TIFF: "image/tiff",
    ImageFormat.BMP: "image/bmp",
    ImageFormat.ICO: "image/vnd.microsoft.icon",
    ImageFormat.HEIF: "image/heif",
}
_EXTENSION = {
    ImageFormat.JPEG: "jpg",
    ImageFormat.PNG: "png",
    ImageFormat.WEBP: "webp",
    ImageFormat.AVIF: "avif",
    ImageFormat.GIF: "gif",
    ImageFormat.TIFF: "tiff",
    ImageFormat.BMP: "bmp",
    ImageFormat.ICO: "ico",
    ImageFormat.HEIF: "heif",
}
_ORIENTATION = ExifTags.Base.Orientation


@dataclass(frozen=True)
class ProbeLimits:
    max_bytes: int
    # Per frame, and also for all frames together (like imgproxy's max_src_resolution), so a
    # thousand-frame animation cannot hide behind a small canvas.
    max_pixels: int
    max_frames: int


@dataclass(frozen=True)
class ImageHeader:
    """What the header says. `width`/`height` are as displayed, after the EXIF orientation."""

    format: Format
    width: int
    height: int
    frame_count: int
    size_bytes: int
    # EXIF orientation 1..8; 5..8 mean the stored pixels are transposed.
    orientation: int = 1

    @property
    def mime_type(self) -> str:
        return mime_for(self.format)

    @property
    def extension(self) -> str:
        return extension_for(self.format)

    @property
    def stored_size(self) -> tuple[int, int]:
        """Width and height of the pixels as stored, before the EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def mime_for(fmt: Format) -> str:
    return _MIME.get(fmt, "application/octet-stream")


def extension_for(fmt: Format) -> str:
    return _EXTENSION.get(fmt, "bin")


def pillow_name(fmt: Format) -> str:
    try:
        return _PILLOW[fmt]
    except KeyError:
        raise ValueError(f"no Pillow plugin for format {fmt}") from None


@cache
def readable_formats() -> tuple[Format, ...]:
    """Formats this process can decode (AVIF and HEIF depend on the installed libraries)."""
    out = [f for f in _PILLOW if f not in (ImageFormat.AVIF, ImageFormat.HEIF)]
    if features.check("avif"):
        out.append(ImageFormat.AVIF)
    register_heif()
    if "HEIF" in Image.OPEN:
        out.append(ImageFormat.HEIF)
    return tuple(sorted(out))


def configure_pillow(max_pixels: int) -> None:
    """Process-wide Pillow set-up; call once at start-up, before any image is opened.

    Pillow only warns above MAX_IMAGE_PIXELS and raises above twice that; the warning is made an
    error so that the limit is a hard one wherever Pillow checks it.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    register_heif()


def register_heif() -> None:
    """Teach Pillow to open HEIC/HEIF (pillow-heif). AVIF is built into Pillow itself."""
    try:
        import pillow_heif
    except ImportError:  # optional: HEIF input is then reported as UNSUPPORTED_FORMAT
        return
    # Thumbnails and auxiliary/depth images are never used: do not even parse them.
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def probe(data: bytes, limits: ProbeLimits) -> ImageHeader:
    """Check `data` against the limits using its header only; raise InvalidArgument if it fails."""
    header, image = open_image(data, limits)
    image.close()
    return header


def open_image(data: bytes, limits: ProbeLimits) -> tuple[ImageHeader, ImageFile.ImageFile]:
    """`probe`, plus the lazily opened image (pixels not decoded) positioned on frame 0."""
    if not data:
        raise _error(EMPTY_IMAGE, "the image is empty")
    if len(data) > limits.max_bytes:
        raise _error(
            IMAGE_TOO_LARGE, f"the image is {len(data)} bytes; the limit is {limits.max_bytes}"
        )
    fmt = sniff(data)
    if fmt is None or fmt not in readable_formats():
        raise _error(UNSUPPORTED_FORMAT, "the data is not an image in a supported format")
    with _header_errors(fmt, data):
        image = Image.open(io.BytesIO(data), formats=[_PILLOW[fmt]])
        width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise _error(IMAGE_CORRUPT, f"the {_PILLOW[fmt]} header declares an empty image")
    try:
        _check_pixels(width, height, limits, "the image")
        with _header_errors(fmt):
            frames = _count_frames(image, data, fmt, limits)
            orientation = _orientation(image)
    except BaseException:
        image.close()
        raise
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    header = ImageHeader(fmt, width, height, frames, len(data), orientation)
    return header, image


@contextmanager
def _header_errors(fmt: Format, data: bytes = b"") -> Iterator[None]:
    """Turn whatever a Pillow plugin raises on a bad header into a client-safe error; with the
    image's `data`, a TIFF whose pixel layout Pillow has no mode for is UNSUPPORTED_FORMAT."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(TOO_MANY_PIXELS, "the image has too many pixels") from exc
    except _HEADER_ERRORS as exc:
        # UnidentifiedImageError is an OSError: the magic bytes matched but the header did not.
        if fmt == ImageFormat.TIFF and data and _unsupported_tiff_layout(data):
            raise _error(
                UNSUPPORTED_FORMAT,
                "the TIFF's pixel layout (sample format, bits or samples per pixel) is not one "
                "pixmesh can decode: convert it to 8- or 16-bit grey, RGB or RGBA",
            ) from exc
        raise _error(
            IMAGE_CORRUPT, f"the {_PILLOW[fmt]} header is unreadable or truncated"
        ) from exc


_HEADER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def _unsupported_tiff_layout(data: bytes) -> bool:
    """Whether Pillow's TIFF plugin reads the header whole but has no mode for its pixel layout
    (e.g. float64 samples, five samples per pixel): a valid TIFF, not a corrupt one. Image.open
    hides the plugin's error, so the plugin is asked directly: its "unknown pixel mode" is the
    one SyntaxError raised from the KeyError of its table of layouts (TiffImagePlugin.OPEN_INFO)."""
    try:
        TiffImagePlugin.TiffImageFile(io.BytesIO(data)).close()
    except SyntaxError as exc:
        return isinstance(exc.__cause__, KeyError)
    except _HEADER_ERRORS:
        return False
    return False


def _check_pixels(width: int, height: int, limits: ProbeLimits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise _error(
            TOO_MANY_PIXELS,
            f"{what} is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
        )


def _count_frames(image: ImageFile.ImageFile, data: bytes, fmt: Format, limits: ProbeLimits) -> int:
    width, height = image.size
    if fmt == ImageFormat.GIF:
        # Pillow's GIF n_frames decodes every frame to find the next one: walk the blocks instead.
        frames, canvas_w, canvas_h = gif_frames(data, limits.max_frames + 1)
        width, height = max(width, canvas_w), max(height, canvas_h)
        _check_pixels(width, height, limits, "the animation canvas")
    elif fmt == ImageFormat.TIFF:
        frames = _tiff_frames(image, limits)
    elif fmt == ImageFormat.JPEG:
        # Pillow counts MPF images as frames, but the extra images of an MPO are gain maps,
        # depth maps or the other eye of a stereo pair: only the primary image is ever used.
        frames = 1
    else:
        # PNG (acTL), WebP (demuxer), AVIF/HEIF (container): counted from headers.
        frames = int(getattr(image, "n_frames", 1))
    if frames > limits.max_frames:
        # GIF blocks and TIFF pages are walked only up to the limit + 1: "more than" the limit
        # (a 250-frame GIF was said to have 101); the other formats' counts are exact.
        counted = (
            f"more than {limits.max_frames}"
            if fmt in (ImageFormat.GIF, ImageFormat.TIFF)
            else str(frames)
        )
        raise _error(
            TOO_MANY_FRAMES, f"the image has {counted} frames; the limit is {limits.max_frames}"
        )
    if frames > 1 and width * height * frames > limits.max_pixels:
        raise _error(
            TOO_MANY_PIXELS,
            f"{frames} frames of {width}x{height} pixels exceed the limit of "
            f"{limits.max_pixels} pixels in all",
        )
    return max(frames, 1)


def _tiff_frames(image: ImageFile.ImageFile, limits: ProbeLimits) -> int:
    """Walk at most max_frames + 1 IFDs; each page may have its own size, so check each."""
    frames = 1
    try:
        while frames <= limits.max_frames:
            image.seek(frames)
            _check_pixels(*image.size, limits, f"page {frames + 1}")
            frames += 1
    except EOFError:
        pass
    finally:
        image.seek(0)
    return frames


def gif_frames(data: bytes, cap: int) -> tuple[int, int, int]:
    """Count GIF image descriptors (stopping at `cap`) without decoding any pixels.

    Returns (frames, canvas width, canvas height), the canvas covering every frame's extent
    (Pillow grows the image when a frame sticks out of the logical screen).
    """
    if len(data) < 13:
        raise ValueError("truncated GIF header")
    width, height, packed = struct.unpack_from("<HHB", data, 6)
    pos = 13
    if packed & 0x80:
        pos += 3 << ((packed & 7) + 1)
    frames = 0
    while pos < len(data) and frames < cap:
        block = data[pos]
        if block == 0x2C:  # image descriptor
            if pos + 10 > len(data):
                break
            left, top, w, h, flags = struct.unpack_from("<HHHHB", data, pos + 1)
            width, height = max(width, left + w), max(height, top + h)
            frames += 1
            pos += 10
            if flags & 0x80:
                pos += 3 << ((flags & 7) + 1)
            pos = _skip_sub_blocks(data, pos + 1)  # +1: LZW minimum code size
        elif block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        else:  # 0x3B trailer, or garbage after the last frame: stop either way
            break
    if frames == 0:
        raise ValueError("GIF without any image")
    return frames, width, height


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def _orientation(image: ImageFile.ImageFile) -> int:
    # A PNG's eXIf chunk may come after the pixels, and Pillow would decode them to reach it;
    # the header only counts what was seen before IDAT.
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # malformed EXIF is common in the wild and never fatal: assume upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _error(reason: str, message: str) -> InvalidArgument:
    return InvalidArgument(message=message, reason=reason)
