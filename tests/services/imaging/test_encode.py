import io

import pytest
from PIL import Image, ImageCms

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Convert
from services.imaging.encode import (
    MaxBytesUnreachable,
    choose_format,
    copyright_exif,
    encode,
    flatten,
    writable_formats,
)

from .samples import FORMATS, RED, decode, frames_of, moving_square, scene, square_x

ALL_OUT = [
    image_pb2.JPEG,
    image_pb2.PNG,
    image_pb2.WEBP,
    image_pb2.AVIF,
    image_pb2.GIF,
    image_pb2.TIFF,
]


def test_writable_formats() -> None:
    assert set(writable_formats()) == set(ALL_OUT)


@pytest.mark.parametrize("fmt", ALL_OUT)
@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_every_format_takes_every_normalised_mode(fmt: int, mode: str) -> None:
    out = decode(encode(scene(64, 48, mode), fmt))  # type: ignore[arg-type]
    assert out.format == FORMATS[fmt]
    assert out.size == (64, 48)


def test_jpeg_flattens_alpha_onto_white() -> None:
    img = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    out = decode(encode(img, image_pb2.JPEG))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))  # type: ignore[misc]
    assert min(r, g, b) >= 250


def test_flatten_keeps_grey_grey() -> None:
    assert flatten(scene(8, 8, "LA")).mode == "L"
    img = scene(8, 8)
    assert flatten(img) is img


@pytest.mark.parametrize("fmt", [image_pb2.JPEG, image_pb2.WEBP, image_pb2.AVIF])
def test_quality_is_applied_and_defaults_sensibly(fmt: int) -> None:
    img = scene(256, 192)
    low = encode(img, fmt, Convert(format=fmt, quality=10))  # type: ignore[arg-type]
    default = encode(img, fmt)  # type: ignore[arg-type]
    high = encode(img, fmt, Convert(format=fmt, quality=100))  # type: ignore[arg-type]
    assert len(low) < len(default) < len(high)


def test_png_keeps_alpha() -> None:
    out = decode(encode(scene(32, 32, "RGBA"), image_pb2.PNG))
    assert out.mode == "RGBA"


@pytest.mark.parametrize(
    "fmt", [image_pb2.JPEG, image_pb2.PNG, image_pb2.WEBP, image_pb2.AVIF, image_pb2.TIFF]
)
def test_icc_profile_is_kept(fmt: int) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = scene(32, 32)
    img.info = {"icc_profile": b"ignored: info never reaches the encoder"}
    assert decode(encode(img, fmt, icc=icc)).info.get("icc_profile") == icc  # type: ignore[arg-type]
    assert "icc_profile" not in decode(encode(img, fmt)).info  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("requested", "source", "alpha", "expected"),
    [
        (image_pb2.WEBP, image_pb2.JPEG, False, image_pb2.WEBP),
        (None, image_pb2.JPEG, False, image_pb2.JPEG),
        (None, image_pb2.GIF, True, image_pb2.GIF),
        (None, image_pb2.BMP, False, image_pb2.PNG),
        (None, image_pb2.ICO, True, image_pb2.PNG),
        (None, image_pb2.HEIF, False, image_pb2.JPEG),
        (None, image_pb2.HEIF, None, image_pb2.JPEG),
        (None, image_pb2.HEIF, True, image_pb2.PNG),
    ],
)
def test_choose_format(
    requested: int | None, source: int, alpha: bool | None, expected: int
) -> None:
    assert choose_format(requested, source, alpha) == expected  # type: ignore[arg-type]


def test_progressive_jpeg() -> None:
    plain = decode(encode(scene(), image_pb2.JPEG))
    progressive = decode(encode(scene(), image_pb2.JPEG, Convert(progressive=True)))
    assert progressive.info.get("progressive") and not plain.info.get("progressive")


def test_interlaced_gif_only_when_asked() -> None:
    # Byte 9 of the first image descriptor's packed field: 0x40 is the interlace flag.
    def interlaced(data: bytes) -> bool:
        at = data.index(b"\x2c", 13 + 3 * 256)  # after the header and a full global palette
        return bool(data[at + 9] & 0x40)

    assert not interlaced(encode(scene(), image_pb2.GIF))
    assert interlaced(encode(scene(), image_pb2.GIF, Convert(progressive=True)))


def test_lossless_webp_is_exact() -> None:
    img = scene(64, 48)
    out = decode(encode(img, image_pb2.WEBP, Convert(lossless=True)))
    assert out.convert("RGB").tobytes() == img.tobytes()
    assert decode(encode(img, image_pb2.WEBP)).convert("RGB").tobytes() != img.tobytes()


def test_png_compression_level() -> None:
    img = scene(256, 192)
    fast = encode(img, image_pb2.PNG, Convert(compression_level=0))
    small = encode(img, image_pb2.PNG, Convert(compression_level=9))
    assert len(small) < len(fast)
    assert decode(fast).tobytes() == decode(small).tobytes() == img.tobytes()


@pytest.mark.parametrize("fmt", [image_pb2.PNG, image_pb2.GIF])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_palette_quantization(fmt: int, mode: str) -> None:
    out = decode(encode(scene(64, 48, mode), fmt, Convert(colors=8)))  # type: ignore[arg-type]
    assert out.mode == "P"
    assert len(out.convert("RGBA").getcolors(256) or []) <= 8 + 1  # + transparent
    if mode == "RGBA":  # the left edge is nearly transparent
        assert out.convert("RGBA").getpixel((0, 5))[3] < 64  # type: ignore[index]
        assert out.convert("RGBA").getpixel((63, 5))[3] > 192  # type: ignore[index]


def test_avif_speed_changes_the_encoding() -> None:
    img = scene(128, 96)
    fast = encode(img, image_pb2.AVIF, Convert(speed=10))
    slow = encode(img, image_pb2.AVIF, Convert(speed=2))
    assert fast != slow and decode(slow).size == (128, 96)


@pytest.mark.parametrize("fmt", [image_pb2.JPEG, image_pb2.WEBP, image_pb2.AVIF])
def test_max_bytes_searches_the_quality(fmt: int) -> None:
    img = scene(256, 192)
    full = encode(img, fmt, Convert(quality=95))  # type: ignore[arg-type]
    target = len(full) // 3
    fitted = encode(img, fmt, Convert(quality=95, max_bytes=target))  # type: ignore[arg-type]
    assert len(fitted) <= target
    # The highest quality that fits: one step up does not.
    assert len(encode(img, fmt, Convert(quality=95, max_bytes=len(full)))) == len(full)  # type: ignore[arg-type]


def test_max_bytes_unreachable() -> None:
    with pytest.raises(MaxBytesUnreachable) as err:
        encode(scene(256, 192), image_pb2.JPEG, Convert(max_bytes=100))
    assert err.value.smallest > 100


@pytest.mark.parametrize("fmt", [image_pb2.GIF, image_pb2.WEBP, image_pb2.PNG, image_pb2.AVIF])
def test_animations_keep_frames_and_durations(fmt: int) -> None:
    frames = moving_square(3)
    data = encode(frames, fmt, durations=[40, 80, 120], loop=0)  # type: ignore[arg-type]
    out = frames_of(data)
    assert len(out) == 3
    img = Image.open(io.BytesIO(data))
    durations = []
    for index in range(3):
        img.seek(index)
        img.load()  # WebP and AVIF set the duration when the frame is decoded
        durations.append(img.info.get("duration"))
    assert durations == [40, 80, 120]
    for index, frame in enumerate(out):
        x = square_x(index, 3) + 7  # the square moves right
        r, g, _, _ = frame.getpixel((x, 17))  # type: ignore[misc]
        assert abs(r - RED[0]) < 40 and g < 80, (index, frame.getpixel((x, 17)))


def test_copyright_exif_keeps_only_copyright_and_artist() -> None:
    exif = Image.Exif()
    exif[0x8298] = "(c) Someone"
    exif[0x013B] = "Someone"
    exif[0x010F] = "camera make"
    kept = Image.Exif()
    kept.load(copyright_exif(exif) or b"")
    assert dict(kept) == {0x8298: "(c) Someone", 0x013B: "Someone"}
    assert copyright_exif(Image.Exif()) is None


@pytest.mark.parametrize(
    "fmt", [image_pb2.JPEG, image_pb2.PNG, image_pb2.WEBP, image_pb2.AVIF, image_pb2.TIFF]
)
def test_exif_is_written(fmt: int) -> None:
    exif = Image.Exif()
    exif[0x8298] = "(c) Someone"
    out = decode(encode(scene(32, 32), fmt, exif=exif.tobytes()))  # type: ignore[arg-type]
    assert out.getexif().get(0x8298) == "(c) Someone"
