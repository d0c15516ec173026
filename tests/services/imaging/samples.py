"""Deterministic synthetic test images, and helpers to encode, decode and fingerprint them.

The scene is asymmetric on purpose (a red square top-left, a blue disc bottom-right, a green bar
along the bottom), so a flip or a rotation the wrong way round changes where the colours land.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from PIL import Image, ImageDraw

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.ops import Context, Size
from services.imaging.validation import check_rules

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


_ONEOF = {f.message_type.full_name: f.name for f in Op.DESCRIPTOR.oneofs_by_name["op"].fields}


def op_name(item: Any) -> str:
    """The Operation oneof field of an operation message: op_name(RoundCorners()) == "round_corners"."""
    return _ONEOF[item.DESCRIPTOR.full_name]


def ops(*items: Any) -> list[operations_pb2.Operation]:
    """Operations from their messages: ops(Resize(width=10), Convert(format=WEBP))."""
    return [Op(**{_ONEOF[item.DESCRIPTOR.full_name]: item}) for item in items]


def animation(
    frames: list[Image.Image], fmt: str = "GIF", durations: list[int] | None = None, **params: Any
) -> bytes:
    """An animated GIF/WebP/PNG of `frames` (100 ms each unless `durations`), looping forever."""
    buf = io.BytesIO()
    frames[0].save(
        buf,
        fmt,
        save_all=True,
        append_images=frames[1:],
        duration=durations or [100] * len(frames),
        loop=0,
        **params,
    )
    return buf.getvalue()


def square_x(index: int, count: int, width: int = 64) -> int:
    """Left edge of the square of `moving_square` in frame `index`."""
    return index * (width - 16) // max(1, count - 1)


def moving_square(count: int = 4, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """Frames of a 16 px red square moving right over grey (rows 10..25); every frame differs."""
    out = []
    for i in range(count):
        frame = Image.new("RGB", size, (128, 128, 128))
        x = square_x(i, count, size[0])
        ImageDraw.Draw(frame).rectangle((x, 10, x + 15, 25), fill=RED)
        out.append(frame)
    return out


def frames_of(data: bytes) -> list[Image.Image]:
    img = Image.open(io.BytesIO(data))
    out = []
    for index in range(getattr(img, "n_frames", 1)):
        img.seek(index)
        out.append(img.convert("RGBA"))
    return out


def icc_profile(name: str, red: Xyz, green: Xyz, blue: Xyz, gamma: float = 2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (lcms accepts it), for colour tests."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: Xyz) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(s15(c) for c in v)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    text = name.encode() + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(D50)),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    body = struct.pack(">I", len(tags)) + table + data
    header = (
        struct.pack(">I", 128 + len(body))
        + b"none"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + bytes(4)  # rendering intent
        + xyz(D50)[8:]
        + bytes(48)
    )
    return header + body


Xyz = tuple[float, float, float]
D50: Xyz = (0.9642, 1.0, 0.8249)
# sRGB's primaries adapted to D50, as in its ICC profile.
SRGB_RED: Xyz = (0.4361, 0.2225, 0.0139)
SRGB_GREEN: Xyz = (0.3851, 0.7169, 0.0971)
SRGB_BLUE: Xyz = (0.1431, 0.0606, 0.7141)


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


def validated(
    validate: Callable[[Any, Size | None, Context], Size | None],
    op: Message,
    src: Size | None,
    ctx: Context,
) -> Size | None:
    """An op's `validate` as imaging's check_operation runs it: after the op's proto rules
    (validation.check_rules), which now hold every check that needs no image."""
    check_rules(op, ctx.path)
    return validate(op, src, ctx)
