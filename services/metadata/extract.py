"""Everything an image says about itself, and what its pixels look like.

`extract` is pure and CPU-bound (run it on an executor). The headers give the properties, EXIF,
IPTC, XMP and the ICC profile; then the first frame is decoded at a reduced size for colours,
placeholders and perceptual hashes. It never fails because of metadata: a broken field, block or
pixel stream is dropped and noted in `warnings`, and everything else is still returned. Only
bytes that no supported decoder accepts are an error.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
from typing import Final

from PIL import Image, ImageCms

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import errors, iptc, pixels, video, xmp
from services.metadata.exif import MAX_TEXT_CHARS, decode
from services.metadata.text import Notes, clean

# Pillow format id -> wire enum. Opening is restricted to these, so bytes that merely resemble
# an exotic format (EPS, PSD, ...) never reach that format's parser.
_FORMATS: Final[dict[str, image_pb2.ImageFormat.ValueType]] = {
    "JPEG": image_pb2.JPEG,
    "MPO": image_pb2.JPEG,  # multi-picture JPEG (phones' depth maps, 3D cameras)
    "PNG": image_pb2.PNG,
    "WEBP": image_pb2.WEBP,
    "AVIF": image_pb2.AVIF,
    "GIF": image_pb2.GIF,
    "TIFF": image_pb2.TIFF,
    "BMP": image_pb2.BMP,
    "ICO": image_pb2.ICO,
    "HEIF": image_pb2.HEIF,
}
# MPO has no opener of its own: JPEG's recognises it.
_OPEN: Final = [name for name in _FORMATS if name != "MPO"]
_EXIF_HEADER: Final = b"Exif\x00\x00"
# Bits per sample of Pillow's modes, for formats whose header we do not read ourselves.
_MODE_BITS: Final = {"1": 1, "I": 32, "F": 32}
# Frames whose durations are summed; beyond this an animation's duration is left unset (the
# services' frame limit is far lower).
_MAX_TIMED_FRAMES: Final = 1000


def extract(data: bytes) -> metadata_pb2.ImageMetadata:
    """Read the metadata of an encoded image.

    Raises InvalidArgument (reason IMAGE_CORRUPT, or IMAGE_TOO_LARGE for a decompression bomb)
    when the bytes cannot be opened as a supported image.
    """
    if video.is_video(data):  # issue 13: a video's header and tags, no frame decoded
        return video.extract_video(data)
    _register_plugins()
    md = metadata_pb2.ImageMetadata(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    notes = Notes()
    try:
        image = Image.open(io.BytesIO(data), formats=_OPEN)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # configure_pillow turns the warning into an error too: both mean "too many pixels".
        raise errors.image_too_large() from exc
    except Exception as exc:
        # Pillow signals bad input with many types (OSError, SyntaxError, ValueError, struct.error).
        raise errors.image_corrupt() from exc
    with image:
        md.format = _FORMATS.get(image.format or "", image_pb2.IMAGE_FORMAT_UNSPECIFIED)
        md.width, md.height = image.size
        md.mode = image.mode
        md.bit_depth = _bit_depth(image, data)
        packet = _xmp(image)
        exif = _read_exif(image, notes)
        if exif is not None and (decoded := decode(exif, notes, xmp=packet)).ListFields():
            md.exif.CopyFrom(decoded)
        if packet:
            md.xmp.update(xmp.parse(packet, notes))
        if (record := iptc.read(image, notes)) is not None:
            md.iptc.CopyFrom(record)
        if (profile := _icc_description(image, notes)) is not None:
            md.icc_profile = profile
        md.frame_count = _frame_count(image, notes)
        if md.frame_count > 1 and (duration := _duration(image, md.frame_count, notes)):
            md.duration_ms = duration
    _summarize_pixels(md, data, notes)
    md.warnings.extend(notes.items)
    return md


def _summarize_pixels(md: metadata_pb2.ImageMetadata, data: bytes, notes: Notes) -> None:
    try:
        summary = pixels.summarize(data, _OPEN)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise errors.image_too_large() from exc
    except Exception:
        # Truncated or corrupt pixel data: the header metadata above is still good.
        notes.add(
            "pixels", "image data could not be decoded; colours, placeholders and hashes omitted"
        )
        return
    md.colors.CopyFrom(summary.colors)
    md.placeholders.CopyFrom(summary.placeholders)
    md.perceptual_hashes.CopyFrom(summary.hashes)


@functools.cache
def _register_plugins() -> None:
    # Once per process; HEIF needs the plugin, AVIF is built into Pillow.
    from pillow_heif import register_heif_opener

    register_heif_opener()


def _read_exif(image: Image.Image, notes: Notes) -> Image.Exif | None:
    raw = image.info.get("exif")
    if isinstance(raw, bytes):
        # Parse the block ourselves rather than through image.getexif(): JPEG's open already
        # parsed it once and swallowed any error, and PNG's getexif() decodes every pixel.
        exif = Image.Exif()
        try:
            exif.load(raw)
        except Exception:
            notes.add("exif", "unreadable EXIF block")
            return None
        if not len(exif) and len(raw.removeprefix(_EXIF_HEADER)) > 8:
            notes.add("exif", "unreadable IFD0")
        return exif
    try:
        # TIFF keeps its tags in the file's own IFD0; the base method reads it without pixels.
        return Image.Image.getexif(image)
    except Exception:
        notes.add("exif", "unreadable EXIF block")
        return None


def _xmp(image: Image.Image) -> bytes | str | None:
    # JPEG/WebP keep XMP under "xmp", PNG under its iTXt keyword.
    value = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    return value if isinstance(value, bytes | str) else None


def _frame_count(image: Image.Image, notes: Notes) -> int:
    # n_frames walks frame headers without decoding pixels (GIF, TIFF) or reads a count from
    # the container (APNG, WebP, AVIF, HEIF); the input size limit bounds the walk.
    try:
        count = int(getattr(image, "n_frames", 1))
    except Exception:
        notes.add("frames", "could not count frames")
        return 1
    return max(count, 1)


def _duration(image: Image.Image, frames: int, notes: Notes) -> int | None:
    """Sum of the frame durations in ms (GIF, APNG, WebP, AVIF keep one per frame in `info`)."""
    if frames > _MAX_TIMED_FRAMES:
        return None
    total = 0.0
    try:
        for index in range(frames):
            image.seek(index)
            total += float(image.info.get("duration") or 0)
    except Exception:
        notes.add("frames", "could not read frame durations")
        return None
    finally:
        with contextlib.suppress(Exception):
            image.seek(0)
    return min(int(total), 2**32 - 1) or None


def _bit_depth(image: Image.Image, data: bytes) -> int:
    if image.format == "PNG" and len(data) > 24:
        return data[24]  # IHDR bit depth: right after the signature, chunk header and size
    if image.format in ("JPEG", "MPO"):
        return int(getattr(image, "bits", 8))
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)
        first = bits[0] if isinstance(bits, tuple) and bits else bits
        if isinstance(first, int) and 0 < first <= 64:
            return first
    if image.mode.startswith("I;16"):
        return 16
    return _MODE_BITS.get(image.mode, 8)


def _icc_description(image: Image.Image, notes: Notes) -> str | None:
    icc = image.info.get("icc_profile")
    if not icc or not isinstance(icc, bytes):
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile)
    except Exception:
        notes.add("icc", "unreadable ICC profile")
        return None
    return clean(description, MAX_TEXT_CHARS) or None
