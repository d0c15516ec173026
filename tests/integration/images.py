"""Test images made with Pillow: a camera-like JPEG with EXIF and GPS, a slow-to-encode noisy
JPEG, and broken variants of a JPEG."""

from __future__ import annotations

import io
import os
from datetime import datetime

from PIL import Image

MAKE = "PixCam"
MODEL = "Model X"
TAKEN = datetime(2021, 6, 15, 14, 30, 0)
# The Eiffel tower: 48°51'29.88"N 2°17'40.2"E.
LATITUDE = 48.8583
LONGITUDE = 2.2945

_TAG_DESCRIPTION = 0x010E
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_TAG_DATETIME_ORIGINAL = 0x9003
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


def camera_jpeg(width: int = 1600, height: int = 1200, description: str = "") -> bytes:
    """A smooth RGB JPEG carrying Make, Model, DateTimeOriginal and a GPS position.
    `description` (EXIF ImageDescription) changes the bytes, not the picture."""
    ramp = Image.linear_gradient("L").resize((width, height))
    img = Image.merge(
        "RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp.rotate(90))
    )
    exif = Image.Exif()
    exif[_TAG_MAKE] = MAKE
    exif[_TAG_MODEL] = MODEL
    if description:
        exif[_TAG_DESCRIPTION] = description
    exif.get_ifd(_IFD_EXIF)[_TAG_DATETIME_ORIGINAL] = TAKEN.strftime("%Y:%m:%d %H:%M:%S")
    gps = exif.get_ifd(_IFD_GPS)
    gps[_GPS_LAT_REF] = "N"
    gps[_GPS_LAT] = (48.0, 51.0, 29.88)
    gps[_GPS_LON_REF] = "E"
    gps[_GPS_LON] = (2.0, 17.0, 40.2)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def noisy_jpeg(width: int, height: int) -> bytes:
    """Upscaled random noise: cheap to make, but seconds for an AVIF encoder on 2 cores."""
    small = (width // 4, height // 4)
    noise = Image.frombytes("RGB", small, os.urandom(small[0] * small[1] * 3))
    out = io.BytesIO()
    noise.resize((width, height), Image.Resampling.BILINEAR).save(out, "JPEG", quality=90)
    return out.getvalue()


def scan_start(jpeg: bytes) -> int:
    """Offset of the first byte of entropy-coded data (just after the SOS segment)."""
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")


def truncated_in_scan(jpeg: bytes) -> bytes:
    """Intact header, then a little of the scan and no EOI: the header probe passes, decoding
    cannot."""
    start = scan_start(jpeg)
    return jpeg[: start + 200]


def truncated_in_header(jpeg: bytes) -> bytes:
    """Cut before the frame header (SOF): not even the dimensions can be read."""
    return jpeg[:100]
