"""Decode a stage's input to pixels and encode the denoised result.

Limits are checked from the header before decoding (services.runtime.imageprobe), the EXIF
orientation is applied, and every mode becomes L, LA, RGB or RGBA (alpha is carried through
untouched). The output keeps the input's format when it is one we write losslessly or nearly
so, because the next stage (or the user) expects it: JPEG at quality 95, WebP lossless, PNG and
TIFF as they are; anything else (GIF, BMP, ICO, HEIF, AVIF) becomes PNG. Like the imaging
service, only the ICC profile survives.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from services.runtime import imageprobe, pipeline
from services.runtime.errors import InvalidArgument
from services.runtime.imageprobe import Format, ImageFormat, ProbeLimits
from services.runtime.pixels import normalize_mode

log = logging.getLogger(__name__)

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)
JPEG_QUALITY = 95
# Formats the output may take (kept from the input, or asked for by the Denoise RPC): the
# planner's rule for a denoise stage (services.runtime.pipeline), so plans predict these bytes.
WRITABLE_FORMATS = pipeline.INFERENCE_FORMATS


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8, (H, W) grey or (H, W, 3) RGB
    alpha: np.ndarray | None  # uint8 (H, W)
    format: Format
    icc: bytes | None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class Encoded:
    data: bytes
    format: Format
    content_type: str
    extension: str
    width: int
    height: int


def probe(data: bytes, limits: ProbeLimits) -> imageprobe.ImageHeader:
    return imageprobe.probe(data, limits)


def decode(data: bytes, limits: ProbeLimits) -> Decoded:
    header, image = imageprobe.open_image(data, limits)
    try:
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidArgument(
                message="the image has too many pixels", reason=imageprobe.TOO_MANY_PIXELS
            ) from exc
        except _DECODE_ERRORS as exc:
            log.info("undecodable image: %r", exc)
            raise InvalidArgument(
                message="the image data is corrupt or truncated", reason=imageprobe.IMAGE_CORRUPT
            ) from exc
        icc = image.info.get("icc_profile")
        try:
            oriented = ImageOps.exif_transpose(image)
        except Exception as exc:  # malformed EXIF is common and never worth failing for
            log.info("ignoring unreadable EXIF orientation: %r", exc)
            oriented = image
        img = normalize_mode(oriented)
        alpha = np.array(img.getchannel("A")) if img.mode in ("LA", "RGBA") else None
        pixels = np.array(img.convert("RGB" if img.mode in ("RGB", "RGBA") else "L"))
    finally:
        image.close()
    return Decoded(pixels, alpha, header.format, icc if isinstance(icc, bytes) else None)


def output_format(source: Format, requested: Format | None = None) -> Format:
    if requested:
        return requested
    return pipeline.inference_output_format(source)


def encode(pixels: np.ndarray, alpha: np.ndarray | None, fmt: Format, icc: bytes | None) -> Encoded:
    img = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    if alpha is not None and fmt != ImageFormat.JPEG:
        img.putalpha(Image.fromarray(alpha, "L"))
    elif alpha is not None:  # JPEG has no alpha: lay it over white like the imaging service
        canvas = Image.new(img.mode, img.size, 255 if img.mode == "L" else (255, 255, 255))
        canvas.paste(img, mask=Image.fromarray(alpha, "L"))
        img = canvas
    params: dict[str, Any] = {}
    if fmt == ImageFormat.JPEG:
        params["quality"] = JPEG_QUALITY
    elif fmt == ImageFormat.WEBP:
        params["lossless"] = True
    elif fmt == ImageFormat.TIFF:
        params["compression"] = "tiff_adobe_deflate"
    if icc and fmt != ImageFormat.GIF:
        params["icc_profile"] = icc
    out = io.BytesIO()
    img.save(out, format=imageprobe.pillow_name(fmt), **params)
    return Encoded(
        out.getvalue(),
        fmt,
        imageprobe.mime_for(fmt),
        imageprobe.extension_for(fmt),
        img.width,
        img.height,
    )
