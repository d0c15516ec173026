"""Test images built in code: Pillow for pixels, a tiny TIFF writer for EXIF of any shape.

Pillow's own EXIF writer coerces values to each tag's declared type, so it cannot produce the
broken blocks real files carry (wrong types, zero denominators, dangling offsets). `tiff` writes
exactly the entries it is given.
"""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED = 1, 2, 3, 4, 5, 7
_UNIT = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, UNDEFINED: 1}
EXIF_IFD, GPS_IFD = 0x8769, 0x8825


@dataclass(frozen=True)
class Entry:
    tag: int
    type: int
    count: int
    payload: bytes


def ascii_(tag: int, value: str | bytes) -> Entry:
    raw = (value.encode() if isinstance(value, str) else value) + b"\x00"
    return Entry(tag, ASCII, len(raw), raw)


def short(tag: int, *values: int) -> Entry:
    return Entry(tag, SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def long_(tag: int, *values: int) -> Entry:
    return Entry(tag, LONG, len(values), struct.pack(f"<{len(values)}L", *values))


def byte(tag: int, *values: int) -> Entry:
    return Entry(tag, BYTE, len(values), bytes(values))


def rational(tag: int, *pairs: tuple[int, int]) -> Entry:
    flat = [n for pair in pairs for n in pair]
    return Entry(tag, RATIONAL, len(pairs), struct.pack(f"<{len(flat)}L", *flat))


def dms(tag: int, degrees: int, minutes: int, seconds_x100: int) -> Entry:
    return rational(tag, (degrees, 1), (minutes, 1), (seconds_x100, 100))


def _ifd(entries: list[Entry], start: int) -> bytes:
    """One IFD at `start`, its out-of-line values right after it, next-IFD pointer 0."""
    entries = sorted(entries, key=lambda e: e.tag)
    data_at = start + 2 + 12 * len(entries) + 4
    table, data = b"", b""
    for e in entries:
        if len(e.payload) <= 4:
            table += struct.pack("<HHL", e.tag, e.type, e.count) + e.payload.ljust(4, b"\x00")
        else:
            table += struct.pack("<HHLL", e.tag, e.type, e.count, data_at + len(data))
            data += e.payload + b"\x00" * (len(e.payload) % 2)  # word alignment
    return struct.pack("<H", len(entries)) + table + b"\x00\x00\x00\x00" + data


def tiff(
    ifd0: list[Entry], exif: list[Entry] | None = None, gps: list[Entry] | None = None
) -> bytes:
    """A little-endian TIFF structure (an EXIF block without the "Exif\\0\\0" header)."""
    pointers = [t for t, sub in ((EXIF_IFD, exif), (GPS_IFD, gps)) if sub is not None]
    # Pointer values do not change the IFD0 size (a LONG is stored inline): size it first.
    size0 = len(_ifd([*ifd0, *(long_(t, 0) for t in pointers)], 8))
    offset, subs, blob = 8 + size0, {}, b""
    for tag, sub in ((EXIF_IFD, exif), (GPS_IFD, gps)):
        if sub is not None:
            subs[tag] = offset
            chunk = _ifd(sub, offset)
            blob += chunk
            offset += len(chunk)
    head = _ifd([*ifd0, *(long_(t, o) for t, o in subs.items())], 8)
    return b"II*\x00" + struct.pack("<L", 8) + head + blob


def jpeg(
    exif: bytes | Image.Exif | None = None,
    *,
    size: tuple[int, int] = (32, 24),
    xmp: bytes | None = None,
) -> bytes:
    """A JPEG; raw `exif` bytes get the APP1 "Exif\\0\\0" header prepended."""
    params: dict[str, object] = {}
    if isinstance(exif, bytes):
        params["exif"] = b"Exif\x00\x00" + exif
    elif exif is not None:
        params["exif"] = exif
    if xmp is not None:
        params["xmp"] = xmp
    out = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(out, "JPEG", **params)
    return out.getvalue()


def insert_segment(jpeg_bytes: bytes, marker: int, payload: bytes) -> bytes:
    """Put an APPn segment right after SOI, as a careless writer would."""
    assert jpeg_bytes[:2] == b"\xff\xd8"
    segment = struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload
    return jpeg_bytes[:2] + segment + jpeg_bytes[2:]


def scene(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A photo-like picture: overlapping soft shapes in random colours, different per seed.

    Perceptual hashes need structure at low frequencies; a plain gradient has almost none, so
    its hash bits would be noise."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(30, size[0] // 4)
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(3))


def iptc_app13(datasets: list[tuple[int, int, bytes]]) -> bytes:
    """A Photoshop APP13 payload holding an IPTC-IIM block of (record, dataset, value)."""
    iim = b"".join(
        struct.pack(">BBBH", 0x1C, record, dataset, len(value)) + value
        for record, dataset, value in datasets
    )
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">L", len(iim))
    resource += iim + b"\x00" * (len(iim) % 2)
    return b"Photoshop 3.0\x00" + resource
