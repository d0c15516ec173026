import pytest
from PIL import Image, ImageCms

from pixmesh.common.v1 import image_pb2
from services.imaging.encode import choose_format, encode, flatten, writable_formats

from .samples import FORMATS, decode, scene

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
    low = encode(img, fmt, 10)  # type: ignore[arg-type]
    default = encode(img, fmt)  # type: ignore[arg-type]
    high = encode(img, fmt, 100)  # type: ignore[arg-type]
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
    img.info = {"icc_profile": icc}
    assert decode(encode(img, fmt)).info.get("icc_profile") == icc  # type: ignore[arg-type]


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
