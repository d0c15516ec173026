"""Deterministic synthetic test images, and helpers to encode, decode and fingerprint them.

The scene is asymmetric on purpose (a red square top-left, a blue disc bottom-right, a green bar
along the bottom), so a flip or a rotation the wrong way round changes where the colours land.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw

from pixmesh.common.v1 import image_pb2, operations_pb2

Op = operations_pb2.Operation
RED, BLUE, GREEN, WHITE = (220, 30, 30), (30, 30, 220), (30, 200, 30), (255, 255, 255)


def scene(width: int = 320, height: int = 240, mode: str = "RGB") -> Image.Image:
    base = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").rotate(90).resize((width, height)),  # dark right, light left
            Image.linear_gradient("L").resize((width, height)),  # dark top, light bottom
            Image.new("L", (width, height), 128),
        ],
    )
    draw = ImageDraw.Draw(base)
    draw.rectangle((0, 0, width // 4, height // 4), fill=RED)
    draw.ellipse((width * 3 // 4, height * 5 // 8, width - 1, height * 7 // 8), fill=BLUE)
    draw.rectangle((0, height * 15 // 16, width - 1, height - 1), fill=GREEN)
    if mode == "RGBA":
        base.putalpha(Image.linear_gradient("L").rotate(90).resize((width, height)))
    return base if mode in ("RGB", "RGBA") else base.convert(mode)


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def exif_rotated_jpeg(upright: Image.Image, orientation: int = 6, **params: Any) -> bytes:
    """A JPEG whose stored pixels, once `orientation` is applied, show `upright`."""
    stored = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,  # shown after a 90° clockwise turn
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "pixmesh-test-camera"  # Make: proves metadata is stripped from outputs
    return encode(upright.transpose(stored), "JPEG", quality=95, exif=exif.tobytes(), **params)


def ops(*items: Any) -> list[operations_pb2.Operation]:
    """Operations from their messages: ops(Resize(width=10), Convert(format=WEBP))."""
    out = []
    for item in items:
        name = {
            operations_pb2.Resize: "resize",
            operations_pb2.Crop: "crop",
            operations_pb2.Rotate: "rotate",
            operations_pb2.Flip: "flip",
            operations_pb2.Convert: "convert",
            operations_pb2.Denoise: "denoise",
            operations_pb2.ExtractMetadata: "extract_metadata",
        }[type(item)]
        out.append(Op(**{name: item}))
    return out


def colour_at(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = img.convert("RGBA").getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=False))


FORMATS = {
    image_pb2.JPEG: "JPEG",
    image_pb2.PNG: "PNG",
    image_pb2.WEBP: "WEBP",
    image_pb2.AVIF: "AVIF",
    image_pb2.GIF: "GIF",
    image_pb2.TIFF: "TIFF",
}
