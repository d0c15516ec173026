"""An image's format by its first bytes: one rule for the gateway's probe, a batch's ingest of a
storage prefix and `pixmesh batch`'s choice of the files of a folder (it lives in the SDK, which
ships without the services, so that all three take the same files)."""

from __future__ import annotations

from typing import TypeAlias

from pixmesh.common.v1 import image_pb2

ImageFormat = image_pb2.ImageFormat
Format: TypeAlias = image_pb2.ImageFormat.ValueType

# The bytes `sniff` may look at: an ISO-BMFF `ftyp` box lists its brands within them.
HEAD_BYTES = 512
# ISO-BMFF major/compatible brands (the `ftyp` box) of the two formats built on it.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
# "BM" alone is too common a start for text: also require a known DIB header size.
_BMP_INFO_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff(data: bytes) -> Format | None:
    """The format announced by the magic bytes, or None when it is not one we know."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ImageFormat.GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ImageFormat.TIFF
    if head[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_INFO_SIZES:
        return ImageFormat.BMP
    if head[:4] == b"\x00\x00\x01\x00":
        return ImageFormat.ICO
    if head[4:8] == b"ftyp":
        return _sniff_bmff(data)
    return None


def _sniff_bmff(data: bytes) -> Format | None:
    size = int.from_bytes(data[:4], "big")
    if size < 16:
        return None
    box = data[8 : min(size, HEAD_BYTES)]
    brands = {box[0:4]} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return ImageFormat.AVIF
    if brands & _HEIF_BRANDS:
        return ImageFormat.HEIF
    return None
