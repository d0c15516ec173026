"""What an image says about itself, read from its headers: format, geometry, frames and EXIF.

`extract` is pure and CPU-bound (run it on an executor). It never decodes pixels, so it is cheap
even for large images, and it never fails because of metadata: a broken EXIF field is dropped and
noted in `warnings`. Only bytes that no supported decoder accepts are an error.
"""

from __future__ import annotations

import functools
import hashlib
import io
from typing import Final

from PIL import Image

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import errors
from services.metadata.exif import Notes, decode

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


def extract(data: bytes) -> metadata_pb2.ImageMetadata:
    """Read the metadata of an encoded image.

    Raises InvalidArgument (reason IMAGE_CORRUPT, or IMAGE_TOO_LARGE for a decompression bomb)
    when the bytes cannot be opened as a supported image.
    """
    _register_plugins()
    md = metadata_pb2.ImageMetadata(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    notes = Notes()
    try:
        image = Image.open(io.BytesIO(data), formats=_OPEN)
    except Image.DecompressionBombError as exc:
        raise errors.image_too_large() from exc
    except Exception as exc:
        # Pillow signals bad input with many types (OSError, SyntaxError, ValueError, struct.error).
        raise errors.image_corrupt() from exc
    with image:
        md.format = _FORMATS.get(image.format or "", image_pb2.IMAGE_FORMAT_UNSPECIFIED)
        md.width, md.height = image.size
        md.mode = image.mode
        exif = _read_exif(image, notes)
        if exif is not None and (decoded := decode(exif, notes, xmp=_xmp(image))).ListFields():
            md.exif.CopyFrom(decoded)
        md.frame_count = _frame_count(image, notes)
    md.warnings.extend(notes.items)
    return md


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
