import io
import struct
import time
import warnings
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image

from pixmesh.common.v1 import image_pb2
from services.runtime import imageprobe
from services.runtime.errors import InvalidArgument
from services.runtime.imageprobe import ImageHeader, ProbeLimits, gif_frames, probe, sniff

LIMITS = ProbeLimits(max_bytes=10_000_000, max_pixels=50_000_000, max_frames=100)
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]


def encoded(fmt: str, size: tuple[int, int] = (64, 48), **params: object) -> bytes:
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def animation(fmt: str, frames: int = 3, size: tuple[int, int] = (40, 30)) -> bytes:
    images = [Image.new("RGB", size, COLOURS[i % 3]) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=True, append_images=images[1:], duration=50)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims any size (the data would never decode)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def rejects(data: bytes, limits: ProbeLimits = LIMITS) -> str:
    with pytest.raises(InvalidArgument) as err:
        probe(data, limits)
    assert "Traceback" not in err.value.message
    return err.value.reason


@pytest.mark.parametrize(
    ("pillow", "fmt", "mime", "ext"),
    [
        ("JPEG", image_pb2.JPEG, "image/jpeg", "jpg"),
        ("PNG", image_pb2.PNG, "image/png", "png"),
        ("WEBP", image_pb2.WEBP, "image/webp", "webp"),
        ("AVIF", image_pb2.AVIF, "image/avif", "avif"),
        ("GIF", image_pb2.GIF, "image/gif", "gif"),
        ("TIFF", image_pb2.TIFF, "image/tiff", "tiff"),
        ("BMP", image_pb2.BMP, "image/bmp", "bmp"),
        ("HEIF", image_pb2.HEIF, "image/heif", "heif"),
    ],
)
def test_every_format(pillow: str, fmt: int, mime: str, ext: str) -> None:
    data = encoded(pillow)
    header = probe(data, LIMITS)
    assert header == ImageHeader(fmt, 64, 48, 1, len(data))  # type: ignore[arg-type]
    assert (header.mime_type, header.extension) == (mime, ext)


def test_ico() -> None:
    data = encoded("ICO", (64, 64), sizes=[(16, 16), (48, 48)])
    header = probe(data, LIMITS)
    assert (header.format, header.width, header.height) == (image_pb2.ICO, 48, 48)


def test_the_bytes_decide_not_the_name() -> None:
    # "photo.jpg" that is really a PNG: probe never sees the name or the Content-Type.
    assert probe(encoded("PNG"), LIMITS).format == image_pb2.PNG
    for not_an_image in (
        b"%PDF-1.7\n...",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"hello world",
        b"BMW 320d, 2019" + bytes(40),
        b"\x00" * 64,
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ):
        assert rejects(not_an_image) == "UNSUPPORTED_FORMAT"


def test_empty() -> None:
    assert rejects(b"") == "EMPTY_IMAGE"


def test_too_many_bytes_is_checked_first() -> None:
    data = encoded("PNG")
    assert rejects(data, ProbeLimits(len(data) - 1, 50_000_000, 100)) == "IMAGE_TOO_LARGE"
    assert rejects(b"garbage" * 10, ProbeLimits(10, 50_000_000, 100)) == "IMAGE_TOO_LARGE"


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP", "HEIF", "AVIF"])
def test_truncated_header(fmt: str) -> None:
    data = encoded(fmt)
    assert sniff(data[:16]) is not None or fmt == "BMP"  # the magic survives the cut
    assert rejects(data[:20]) in ("IMAGE_CORRUPT", "UNSUPPORTED_FORMAT")
    assert rejects(data[:18] + bytes(30)) == "IMAGE_CORRUPT"


def test_magic_without_a_header_is_corrupt() -> None:
    assert rejects(b"\xff\xd8\xff" + b"\x00" * 100) == "IMAGE_CORRUPT"
    assert rejects(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100) == "IMAGE_CORRUPT"
    assert rejects(png_header(0, 10)) == "IMAGE_CORRUPT"


def test_huge_declared_size_in_a_tiny_png() -> None:
    data = png_header(9000, 9000)  # 81 MP in 57 bytes: under Pillow's default, over ours
    assert len(data) < 100
    start = time.perf_counter()
    assert rejects(data) == "TOO_MANY_PIXELS"
    assert rejects(png_header(100_000, 100_000)) == "TOO_MANY_PIXELS"  # Pillow's bomb error
    assert time.perf_counter() - start < 0.5  # nothing was decoded


def test_huge_declared_size_in_a_jpeg() -> None:
    data = bytearray(encoded("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    assert rejects(bytes(data)) == "TOO_MANY_PIXELS"


def test_pixel_limit_is_inclusive() -> None:
    data = encoded("PNG", (100, 50))
    assert probe(data, ProbeLimits(10**6, 5000, 1)).width == 100
    assert rejects(data, ProbeLimits(10**6, 4999, 1)) == "TOO_MANY_PIXELS"


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_frame_count(fmt: str) -> None:
    data = animation(fmt, frames=3)
    assert probe(data, LIMITS).frame_count == 3
    assert rejects(data, ProbeLimits(10**7, 10**7, 2)) == "TOO_MANY_FRAMES"
    # 3 frames of 40x30 = 3600 pixels in all; each frame alone is within 3000.
    assert rejects(data, ProbeLimits(10**7, 3000, 10)) == "TOO_MANY_PIXELS"


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_frames_counted_up_to_the_limit_are_reported_as_more_than_it(fmt: str) -> None:
    """GIF blocks and TIFF pages are walked only to the limit + 1: a 250-frame GIF was
    refused as "the image has 101 frames; the limit is 100"."""
    data = animation(fmt, frames=9)
    with pytest.raises(InvalidArgument) as err:
        probe(data, ProbeLimits(10**7, 10**7, 4))
    assert err.value.message == "the image has more than 4 frames; the limit is 4"
    with pytest.raises(InvalidArgument) as err:  # counted exactly elsewhere
        probe(animation("WEBP", frames=9), ProbeLimits(10**7, 10**7, 4))
    assert err.value.message == "the image has 9 frames; the limit is 4"


def test_mpo_extra_images_are_not_frames() -> None:
    # Phone JPEGs carry gain or depth maps as MPF images; Pillow opens them as 2-frame MPOs.
    primary, gain_map = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (32, 24), "blue")
    buf = io.BytesIO()
    primary.save(buf, "MPO", save_all=True, append_images=[gain_map])
    header = probe(buf.getvalue(), ProbeLimits(10**7, 64 * 48, 1))
    assert (header.format, header.width, header.frame_count) == (image_pb2.JPEG, 64, 1)


def test_gif_frames_are_counted_without_decoding() -> None:
    data = animation("GIF", frames=30)
    assert gif_frames(data, 1000) == (30, 40, 30)
    assert gif_frames(data, 5)[0] == 5  # stops at the cap
    assert rejects(data, ProbeLimits(10**7, 10**7, 4)) == "TOO_MANY_FRAMES"
    with pytest.raises(ValueError):
        gif_frames(data[:13], 10)


def test_gif_frame_outside_the_logical_screen_counts() -> None:
    # Logical screen 10x10, one 4000x3000 frame: the canvas Pillow would allocate is the frame.
    data = (
        b"GIF89a"
        + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 4000, 3000, 0)
        + b"\x02\x00"
        + b"\x3b"
    )
    assert gif_frames(data, 10) == (1, 4000, 3000)
    assert rejects(data, ProbeLimits(10**6, 1_000_000, 10)) == "TOO_MANY_PIXELS"


def test_tiff_pages_are_checked_one_by_one() -> None:
    pages = [Image.new("RGB", (50, 50)), Image.new("RGB", (200, 200))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    assert probe(buf.getvalue(), LIMITS).frame_count == 2
    assert rejects(buf.getvalue(), ProbeLimits(10**7, 10_000, 10)) == "TOO_MANY_PIXELS"


def test_exif_orientation_gives_the_displayed_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded("JPEG", (64, 48), exif=exif.tobytes())
    header = probe(data, LIMITS)
    assert (header.width, header.height, header.orientation) == (48, 64, 6)
    assert header.stored_size == (64, 48)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_malformed_exif_is_not_fatal() -> None:
    data = encoded("JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\xff\xff")
    assert probe(data, LIMITS).orientation == 1


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heicmiaf", image_pb2.HEIF),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", image_pb2.HEIF),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", image_pb2.AVIF),
        (b"\x00\x00\x00\x14ftypavis\x00\x00\x00\x00avis", image_pb2.AVIF),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isommp41", None),  # an MP4 video
        (b"II*\x00\x08\x00\x00\x00", image_pb2.TIFF),
        (b"MM\x00*\x00\x00\x00\x08", image_pb2.TIFF),
    ],
)
def test_sniff(head: bytes, expected: int | None) -> None:
    assert sniff(head + bytes(32)) == expected


@pytest.fixture
def pillow_state() -> Iterator[None]:
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        yield
    Image.MAX_IMAGE_PIXELS = saved


def test_configure_pillow_makes_the_limit_hard(pillow_state: None) -> None:
    imageprobe.configure_pillow(1000)
    assert Image.MAX_IMAGE_PIXELS == 1000
    # 1600 pixels: Pillow alone would only warn below 2000.
    with pytest.raises(Image.DecompressionBombWarning):
        Image.open(io.BytesIO(encoded("PNG", (40, 40))))
    assert rejects(encoded("PNG", (40, 40))) == "TOO_MANY_PIXELS"
    assert "HEIF" in Image.OPEN


def test_mime_and_extension_helpers() -> None:
    assert imageprobe.mime_for(image_pb2.ICO) == "image/vnd.microsoft.icon"
    assert imageprobe.extension_for(image_pb2.JPEG) == "jpg"
    assert imageprobe.mime_for(image_pb2.IMAGE_FORMAT_UNSPECIFIED) == "application/octet-stream"
    assert imageprobe.pillow_name(image_pb2.WEBP) == "WEBP"


def tiff(bits: int, sample_format: int, samples: int, width: int = 4, height: int = 3) -> bytes:
    """A minimal little-endian, uncompressed, one-strip TIFF of zeros, laid out as asked."""
    pixels = bytes(width * height * samples * bits // 8)
    short, long = 3, 4
    tags = [
        (256, short, width),  # ImageWidth
        (257, short, height),  # ImageLength
        (258, short, bits),  # BitsPerSample (one value: the same for every sample)
        (259, short, 1),  # Compression: none
        (262, short, 2 if samples == 3 else 1),  # Photometric: RGB, else BlackIsZero
        (273, long, 0),  # StripOffsets, patched below
        (277, short, samples),  # SamplesPerPixel
        (278, short, height),  # RowsPerStrip
        (279, long, len(pixels)),  # StripByteCounts
        (339, short, sample_format),  # SampleFormat: 1 unsigned, 3 IEEE float
    ]
    offset = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        value = offset if tag == 273 else value
        ifd += struct.pack("<HHI", tag, kind, 1)
        ifd += struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_valid_tiff_pillow_has_no_mode_for_is_unsupported_not_corrupt() -> None:
    """float64 samples, or five samples per pixel: a well-formed TIFF that Pillow cannot decode
    is a permanent UNSUPPORTED_FORMAT, not IMAGE_CORRUPT (which reads as a damaged upload)."""
    assert probe(tiff(8, 1, 1), LIMITS).format == image_pb2.TIFF  # the builder makes TIFFs
    assert probe(tiff(8, 1, 3), LIMITS).format == image_pb2.TIFF
    assert rejects(tiff(64, 3, 1)) == "UNSUPPORTED_FORMAT"
    assert rejects(tiff(8, 1, 5)) == "UNSUPPORTED_FORMAT"
    assert rejects(tiff(8, 1, 1)[:40]) == "IMAGE_CORRUPT"  # a cut IFD is still corrupt
