"""A corpus of hostile image files, generated (nothing binary is checked in).

Decompression bombs in PNG, GIF, TIFF and WebP, huge dimensions declared by tiny files, animation
bombs, truncated and bit-flipped files, files whose label lies and empty ones. Each `Case` says
where pixmesh must stop it and with which reason: at upload (`UPLOAD`: 400 INVALID_ARGUMENT, the
header alone shows it) or in the worker (`JOB`: the header is fine, decoding is not; the job
FAILS for good on its first delivery).

Bombs are written by hand with zlib, so a 100-megapixel file costs milliseconds to make and a
few kilobytes to store; the real encoders are used for the ordinary images that are then broken.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, cached_property

from PIL import Image

from services.imaging.errors import (
    EMPTY_IMAGE,
    IMAGE_CORRUPT,
    TOO_MANY_FRAMES,
    TOO_MANY_PIXELS,
    UNSUPPORTED_FORMAT,
)

from .samples import scene

UPLOAD = "upload"  # rejected from the header, before a job exists
JOB = "job"  # accepted at upload; the worker fails the job permanently


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    stage: str  # UPLOAD or JOB
    reason: str
    # What a client would send as Content-Type; never trusted (the format is sniffed).
    content_type: str = "application/octet-stream"

    @cached_property
    def data(self) -> bytes:
        """Built on first use: collecting the tests costs nothing."""
        return self.make()


# -- PNG ---------------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)


def zeros_deflated(total: int, level: int = 9, block: int = 1 << 20) -> bytes:
    """`total` zero bytes through zlib, streamed: ~1000:1, the deflate ceiling."""
    z = zlib.compressobj(level)
    out = [z.compress(bytes(min(block, total - i))) for i in range(0, total, block)]
    return b"".join(out) + z.flush()


def png_bomb(width: int, height: int, bit_depth: int = 1, colour: int = 0) -> bytes:
    """A complete PNG of zeros (grey by default): each row is a filter byte and zero samples."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = 1 + (width * channels * bit_depth + 7) // 8
    idat = zeros_deflated(row * height, level=1 if row * height > 1 << 26 else 9)
    header = png_header(width, height, bit_depth, colour)
    return header + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def apng_frame_bomb(frames: int) -> bytes:
    """A 1x1 PNG whose acTL announces `frames` animation frames."""
    actl = _chunk(b"acTL", struct.pack(">II", frames, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    return png_header(1, 1) + actl + idat + _chunk(b"IEND", b"")


# -- GIF ---------------------------------------------------------------------------------------

# LZW data of a frame with code size 2: clear (4), then end of information (5), packed into one
# byte. A decoder stops at once; the pixels are whatever it filled the frame with.
_EMPTY_LZW = b"\x02\x01\x44\x00"


def gif(screen: tuple[int, int], frames: list[tuple[int, int]]) -> bytes:
    """A GIF with a 2-colour global palette and empty frames of the given sizes."""
    out = [b"GIF89a", struct.pack("<HHBBB", *screen, 0x80, 0, 0), b"\x00\x00\x00\xff\xff\xff"]
    for w, h in frames:
        out.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, w, h, 0) + _EMPTY_LZW)
    out.append(b"\x3b")
    return b"".join(out)


# -- TIFF --------------------------------------------------------------------------------------


def _ifd(entries: list[tuple[int, int, int, int]], next_ifd: int) -> bytes:
    """Little-endian IFD; entries are (tag, type, count, value) with the value inline."""
    out = [struct.pack("<H", len(entries))]
    for tag, kind, count, value in sorted(entries):
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        out.append(struct.pack("<HHI", tag, kind, count) + packed)
    out.append(struct.pack("<I", next_ifd))
    return b"".join(out)


def tiff_bomb(width: int, height: int) -> bytes:
    """A bilevel TIFF whose single deflate strip inflates to width x height pixels of zeros."""
    strip = zeros_deflated((width + 7) // 8 * height)
    ifd_at = 8 + len(strip) + (len(strip) & 1)
    short, long_ = 3, 4
    entries = [
        (256, long_, 1, width),  # ImageWidth
        (257, long_, 1, height),  # ImageLength
        (258, short, 1, 1),  # BitsPerSample
        (259, short, 1, 8),  # Compression: deflate
        (262, short, 1, 1),  # Photometric: black is zero
        (273, long_, 1, 8),  # StripOffsets
        (277, short, 1, 1),  # SamplesPerPixel
        (278, long_, 1, height),  # RowsPerStrip
        (279, long_, 1, len(strip)),  # StripByteCounts
    ]
    pad = b"\0" * (len(strip) & 1)
    return b"II*\x00" + struct.pack("<I", ifd_at) + strip + pad + _ifd(entries, 0)


def tiff_ifd_loop() -> bytes:
    """A 1x1 TIFF whose IFD names itself as the next one: a reader that follows it never ends."""
    short, long_ = 3, 4
    entries = [
        (256, long_, 1, 1),
        (257, long_, 1, 1),
        (258, short, 1, 8),
        (259, short, 1, 1),
        (262, short, 1, 1),
        (273, long_, 1, 8),
        (277, short, 1, 1),
        (278, long_, 1, 1),
        (279, long_, 1, 1),
    ]
    return b"II*\x00" + struct.pack("<I", 10) + b"\x80\x00" + _ifd(entries, 10)


def tiff_pages(pages: int) -> bytes:
    first, *rest = [Image.new("L", (2, 2), i % 256) for i in range(pages)]
    out = io.BytesIO()
    first.save(out, "TIFF", save_all=True, append_images=rest)
    return out.getvalue()


# -- WebP --------------------------------------------------------------------------------------


def _riff_webp(*chunks: bytes) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


@cache
def _tiny_lossless() -> bytes:
    """The VP8L chunk of a 1x1 lossless WebP, taken from libwebp's own output."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, "WEBP", lossless=True)
    data = out.getvalue()
    at = data.index(b"VP8L")
    size = struct.unpack_from("<I", data, at + 4)[0]
    return data[at : at + 8 + size + (size & 1)]


def webp_lossless_bomb(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header declares width x height (14 bits each, <= 16384).

    A single-colour lossless image needs no bits per pixel at all, so the real thing is this
    size too: the header is what gives it away.
    """
    chunk = bytearray(_tiny_lossless())
    bits = (width - 1) | ((height - 1) << 14) | (int.from_bytes(chunk[9:13], "little") >> 28) << 28
    chunk[9:13] = bits.to_bytes(4, "little")
    return _riff_webp(bytes(chunk))


def webp_canvas_bomb(width: int, height: int) -> bytes:
    """An extended WebP (VP8X) declaring a width x height canvas around a 1x1 image."""
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    return _riff_webp(_webp_chunk(b"VP8X", vp8x), _tiny_lossless())


def webp_animation(frames: int, size: int = 8) -> bytes:
    images = [Image.new("RGB", (size, size), (i % 256, 0, 0)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "WEBP", save_all=True, append_images=images[1:], lossless=True)
    return out.getvalue()


# -- JPEG, BMP ---------------------------------------------------------------------------------


def jpeg_huge(width: int = 65500, height: int = 65500) -> bytes:
    """A real JPEG header with its SOF0 dimensions patched: only the header claims the size."""
    data = bytearray(photo("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_huge(width: int = 100_000, height: int = 100_000) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


# -- Broken copies of ordinary images ----------------------------------------------------------


@cache
def photo(fmt: str) -> bytes:
    """An ordinary 320x240 image in `fmt` (noisy enough that its data is not trivial)."""
    img = scene()
    out = io.BytesIO()
    if fmt == "GIF":
        img = img.quantize(64)
    params = {"TIFF": {"compression": "tiff_deflate"}, "WEBP": {"quality": 80}}.get(fmt, {})
    img.save(out, fmt, **params)
    return out.getvalue()


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def flip_bits(data: bytes, offset: int, mask: int = 0xFF) -> bytes:
    broken = bytearray(data)
    broken[offset] ^= mask
    return bytes(broken)


def png_idat_offset(data: bytes) -> int:
    """Offset of the first byte of the first IDAT's zlib stream."""
    return data.index(b"IDAT") + 4


def tiff_strip_offset(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as img:
        offsets = img.tag_v2[273]  # StripOffsets
    return int(offsets[0])


def gif_lzw_code_size(data: bytes, size: int) -> bytes:
    """Set the first frame's LZW minimum code size (2..8 are valid)."""
    at = data.index(b"\x2c") + 10
    return data[:at] + bytes([size]) + data[at + 1 :]


def webp_vp8_offset(data: bytes) -> int:
    """Offset of the VP8 frame tag (3 bytes, then the 9d 01 2a start code)."""
    return data.index(b"VP8 ") + 8


def jpeg_huffman_offset(data: bytes) -> int:
    """Offset of the code lengths in the first DHT segment."""
    return data.index(b"\xff\xc4") + 5


def corpus() -> Iterator[Case]:
    """Every hostile case. The outcomes hold for pixmesh's default limits (50 MP per frame and
    in all, 100 frames, 50 MiB)."""
    yield from _bombs()
    yield from _broken()
    yield from _mislabelled()


def _bombs() -> Iterator[Case]:
    pixels, frames = TOO_MANY_PIXELS, TOO_MANY_FRAMES
    # Decompression bombs: complete files of zeros, a few KB each, 100 MP once decoded.
    yield Case("png-bomb-100mp", lambda: png_bomb(10_000, 10_000), UPLOAD, pixels, "image/png")
    yield Case("tiff-bomb-100mp", lambda: tiff_bomb(10_000, 10_000), UPLOAD, pixels, "image/tiff")
    # Lossless WebP of one colour needs no bits per pixel: 34 bytes for 268 MP.
    yield Case("webp-lossless-bomb", lambda: webp_lossless_bomb(16384, 16384), UPLOAD, pixels)
    yield Case("gif-lzw-bomb", lambda: gif((2, 2), [(20_000, 20_000)]), UPLOAD, pixels)
    # Huge dimensions declared by a tiny file.
    yield Case(
        "png-huge-dims", lambda: png_header(100_000, 100_000) + _chunk(b"IEND", b""), UPLOAD, pixels
    )
    yield Case("gif-huge-screen", lambda: gif((65535, 65535), [(1, 1)]), UPLOAD, pixels)
    yield Case("webp-canvas-bomb", lambda: webp_canvas_bomb(16384, 16384), UPLOAD, pixels)
    yield Case("jpeg-huge-dims", jpeg_huge, UPLOAD, pixels, "image/jpeg")
    yield Case("bmp-huge-dims", bmp_huge, UPLOAD, pixels)
    # Animation bombs: many frames, or frames each within the limit but not all together.
    yield Case("apng-million-frames", lambda: apng_frame_bomb(1_000_000), UPLOAD, frames)
    yield Case("gif-1000-frames", lambda: gif((1, 1), [(1, 1)] * 1000), UPLOAD, frames)
    yield Case("gif-40x4mp-frames", lambda: gif((2000, 2000), [(2000, 2000)] * 40), UPLOAD, pixels)
    yield Case("webp-150-frames", lambda: webp_animation(150), UPLOAD, frames)
    yield Case("tiff-150-pages", lambda: tiff_pages(150), UPLOAD, frames)


def _broken() -> Iterator[Case]:
    corrupt = IMAGE_CORRUPT
    yield Case("empty", lambda: b"", UPLOAD, EMPTY_IMAGE, "image/png")
    yield Case("png-signature-only", lambda: b"\x89PNG\r\n\x1a\n", UPLOAD, corrupt)
    # Truncated: in the header (nothing to read the size from) or in the pixel data.
    yield Case("jpeg-truncated-header", lambda: photo("JPEG")[:100], UPLOAD, corrupt)
    yield Case("webp-truncated", lambda: truncated(photo("WEBP")), UPLOAD, corrupt)
    yield Case("tiff-truncated", lambda: truncated(photo("TIFF")), UPLOAD, corrupt)  # IFD last
    yield Case("jpeg-truncated-scan", lambda: truncated(photo("JPEG")), JOB, corrupt)
    yield Case("png-truncated", lambda: truncated(photo("PNG")), JOB, corrupt)
    yield Case("gif-truncated", lambda: truncated(photo("GIF")), JOB, corrupt)
    # Bit flips where a decoder must notice. (A flip in JPEG entropy-coded data usually still
    # decodes, to a garbled picture: that is a valid image, not an error.)
    yield Case("png-ihdr-bit-flip", lambda: flip_bits(photo("PNG"), 20, 0x01), UPLOAD, corrupt)
    yield Case(
        "webp-start-code-flip", lambda: _flip_at("WEBP", webp_vp8_offset, 3), UPLOAD, corrupt
    )
    yield Case("png-zlib-bit-flip", lambda: _flip_at("PNG", png_idat_offset), JOB, corrupt)
    yield Case("tiff-strip-bit-flip", lambda: _flip_at("TIFF", tiff_strip_offset), JOB, corrupt)
    yield Case("gif-lzw-code-size", lambda: gif_lzw_code_size(photo("GIF"), 12), JOB, corrupt)
    yield Case("webp-vp8-bit-flip", lambda: flip_bits(photo("WEBP"), 60), JOB, corrupt)
    yield Case("jpeg-huffman-bit-flip", lambda: _flip_at("JPEG", jpeg_huffman_offset), JOB, corrupt)


def _flip_at(fmt: str, where: Callable[[bytes], int], delta: int = 0) -> bytes:
    data = photo(fmt)
    return flip_bits(data, where(data) + delta)


def _mislabelled() -> Iterator[Case]:
    """The label (Content-Type, file name) lies; the format is sniffed from the bytes."""
    html = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>'
    # GIF magic in front of a script (a "GIFAR"-style polyglot): the magic alone is not enough.
    polyglot = b"GIF89a/*\x01\x00\x01\x00*/=1;alert(document.cookie)"
    unsupported = UNSUPPORTED_FORMAT
    yield Case("html-as-jpeg", lambda: html, UPLOAD, unsupported, "image/jpeg")
    yield Case("svg-as-png", lambda: svg, UPLOAD, unsupported, "image/png")
    yield Case("zip-as-png", lambda: b"PK\x03\x04" + bytes(60), UPLOAD, unsupported, "image/png")
    yield Case("gif-polyglot", lambda: polyglot, UPLOAD, IMAGE_CORRUPT, "image/gif")


CASES = list(corpus())
