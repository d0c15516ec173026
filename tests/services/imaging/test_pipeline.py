import io
import time

import pytest
from PIL import Image, ImageCms
from PIL.JpegImagePlugin import JpegImageFile

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Crop, Denoise, Grayscale, Resize, Rotate, Trim
from services.imaging import pipeline
from services.imaging.errors import (
    DEADLINE_EXCEEDED,
    IMAGE_CORRUPT,
    OUTPUT_TOO_LARGE,
    TOO_MANY_PIXELS,
    UNKNOWN_OPERATION,
    UNSUPPORTED_OPERATION,
)
from services.imaging.limits import Limits
from services.imaging.pipeline import normalize_mode, run
from services.runtime.errors import DeadlineExceeded, InvalidArgument

from .samples import (
    BLUE,
    GREEN,
    RED,
    SRGB_BLUE,
    SRGB_GREEN,
    SRGB_RED,
    close,
    colour_at,
    decode,
    encode,
    exif_rotated_jpeg,
    icc_profile,
    ops,
    scene,
)

LIMITS = Limits()


def jpeg(width: int = 320, height: int = 240, **params: object) -> bytes:
    return encode(scene(width, height), "JPEG", quality=92, **params)


def test_resize_and_convert_to_webp() -> None:
    outputs = run(
        jpeg(1600, 1200), ops(Resize(width=400), Convert(format=image_pb2.WEBP)), limits=LIMITS
    )
    result = outputs.image
    out = decode(result.data)
    assert out.format == "WEBP" and out.size == (400, 300)
    assert (result.format, result.width, result.height) == (image_pb2.WEBP, 400, 300)
    assert (result.content_type, result.extension) == ("image/webp", "webp")
    assert not result.flattened and result.frames == 1
    assert close(colour_at(out, 10, 10), (*RED, 255))
    assert {"probe", "decode", "colour", "op0.resize", "encode"} <= set(outputs.timings)


def test_without_operations_the_format_is_kept() -> None:
    png = encode(scene(), "PNG")
    result = run(png, [], limits=LIMITS).image
    assert result.format == image_pb2.PNG
    assert decode(result.data).tobytes() == scene().tobytes()  # lossless round trip


def test_default_format_applies_without_a_convert() -> None:
    result = run(jpeg(), [], limits=LIMITS, default_format=image_pb2.PNG).image
    assert decode(result.data).format == "PNG"
    result = run(
        jpeg(), ops(Convert(format=image_pb2.GIF)), limits=LIMITS, default_format=image_pb2.PNG
    ).image
    assert decode(result.data).format == "GIF"


def test_jpeg_draft_gives_the_same_size_as_a_full_decode() -> None:
    big = scene(1603, 1201)
    op = ops(Resize(width=200))  # 8x reduction: libjpeg decodes at 1/8
    from_jpeg = run(encode(big, "JPEG", quality=95), op, limits=LIMITS).image
    from_png = run(encode(big, "PNG"), op, limits=LIMITS).image
    assert (from_jpeg.width, from_jpeg.height) == (from_png.width, from_png.height) == (200, 150)
    a, b = decode(from_jpeg.data).convert("RGB"), decode(from_png.data).convert("RGB")
    assert close(colour_at(a, 100, 75), colour_at(b, 100, 75), 12)
    assert close(colour_at(a, 175, 120), (*BLUE, 255), 24)


def test_jpeg_draft_is_used_for_a_leading_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int] | None] = []
    real_draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        calls.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    result = run(jpeg(1600, 1200), ops(Resize(width=400)), limits=LIMITS).image
    assert calls == [(400, 300)]  # 4x: libjpeg decodes 400x300 directly
    assert (result.width, result.height) == (400, 300)
    calls.clear()
    run(jpeg(1600, 1200), ops(Resize(width=1000)), limits=LIMITS)
    assert calls == []  # 1.6x: not worth a draft
    run(jpeg(1600, 1200), ops(Crop(width=800, height=800), Resize(width=100)), limits=LIMITS)
    assert calls == []  # a crop first works in full-size coordinates


def test_auto_orient_from_exif() -> None:
    upright = scene(240, 320)
    data = exif_rotated_jpeg(upright, orientation=6)
    assert Image.open(io.BytesIO(data)).size == (320, 240)  # stored sideways
    result = run(data, [], limits=LIMITS).image
    out = decode(result.data)
    assert out.size == (240, 320) == (result.width, result.height)
    assert close(colour_at(out, 5, 5), (*RED, 255))  # the red square is back top-left
    assert close(colour_at(out, 120, 317), (*GREEN, 255))


def test_auto_orient_happens_before_the_operations() -> None:
    data = exif_rotated_jpeg(scene(240, 320), orientation=6)
    # The crop is in upright coordinates: the top 60 rows of the 240x320 upright image.
    result = run(
        data, ops(Crop(x=0, y=0, width=240, height=60), Resize(width=120)), limits=LIMITS
    ).image
    out = decode(result.data)
    assert out.size == (120, 30)
    assert close(colour_at(out, 5, 5), (*RED, 255))


def test_auto_orient_with_a_drafted_resize() -> None:
    data = exif_rotated_jpeg(scene(960, 1280), orientation=8)
    result = run(data, ops(Resize(width=240)), limits=LIMITS).image
    out = decode(result.data)
    assert out.size == (240, 320)
    assert close(colour_at(out, 5, 5), (*RED, 255))


WITH_METADATA = (image_pb2.JPEG, image_pb2.WEBP, image_pb2.PNG, image_pb2.TIFF, image_pb2.AVIF)


def tagged_jpeg(icc: bytes, **params: object) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "camera make"
    exif[0x8298] = "(c) Photographer"
    exif[0x013B] = "Photographer"
    return encode(
        scene(), "JPEG", quality=95, icc_profile=icc, comment=b"secret", exif=exif, **params
    )


@pytest.mark.parametrize("target", WITH_METADATA)
def test_metadata_and_profile_are_stripped_by_default(
    target: image_pb2.ImageFormat.ValueType,
) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = exif_rotated_jpeg(scene(240, 320), orientation=6, icc_profile=icc, comment=b"secret")
    out = decode(run(data, ops(Convert(format=target)), limits=LIMITS).image.data)
    exif = out.getexif()  # for a TIFF, its own tags
    assert 0x010F not in exif and 0x0112 not in exif, target  # camera make, orientation
    assert "exif" not in out.info and "comment" not in out.info
    assert "icc_profile" not in out.info  # sRGB pixels need no profile


def test_an_untouched_decoded_file_is_stripped() -> None:
    # No orientation, profile or operation makes a new image: the strip step gets the decoded
    # file itself, whose own tags the TIFF encoder would copy (XMP, IPTC, Make).
    tags = {0x010F: "camera make", 700: b"<x:xmpmeta/>", 33723: b"\x1c\x02"}
    src = scene()
    data = encode(src, "TIFF", tiffinfo=tags)
    assert set(tags) <= set(decode(data).getexif())
    out = decode(run(data, [], limits=LIMITS).image.data)
    assert not set(tags) & set(out.getexif())
    assert "xmp" not in out.info and out.tobytes() == src.tobytes()


@pytest.mark.parametrize("target", WITH_METADATA)
def test_keep_icc_and_copyright(target: image_pb2.ImageFormat.ValueType) -> None:
    icc = icc_profile("wide", SRGB_GREEN, SRGB_RED, SRGB_BLUE)
    keep = Convert(format=target, keep_icc=True, keep_copyright=True)
    out = decode(run(tagged_jpeg(icc), ops(Resize(width=160), keep), limits=LIMITS).image.data)
    assert out.info.get("icc_profile") == icc
    exif = out.getexif()
    assert exif.get(0x8298) == "(c) Photographer" and exif.get(0x013B) == "Photographer"
    assert 0x010F not in exif and "comment" not in out.info
    assert close(colour_at(out, 5, 5), (*RED, 255))  # the pixels are left as they were


def test_pixels_are_converted_to_srgb() -> None:
    # A profile whose red primary is sRGB's green: stored red is displayed green.
    icc = icc_profile("swapped", SRGB_GREEN, SRGB_RED, SRGB_BLUE)
    result = run(encode(scene(), "PNG", icc_profile=icc), [], limits=LIMITS).image
    out = decode(result.data)
    assert "icc_profile" not in out.info
    r, g, b, _ = colour_at(out, 5, 5)  # the red square, (220, 30, 30) in the file
    assert g > 180 and r < 90 and b < 60


def test_a_broken_profile_is_ignored() -> None:
    result = run(encode(scene(), "PNG", icc_profile=b"not a profile"), [], limits=LIMITS).image
    out = decode(result.data)
    assert "icc_profile" not in out.info and close(colour_at(out, 5, 5), (*RED, 255), 2)


def test_cmyk_jpeg_becomes_rgb_with_the_right_colours() -> None:
    cmyk = scene().convert("CMYK")
    for target in (image_pb2.JPEG, image_pb2.PNG):
        out = decode(
            run(
                encode(cmyk, "JPEG", quality=95), ops(Convert(format=target)), limits=LIMITS
            ).image.data
        )
        assert out.mode == "RGB"
        assert close(colour_at(out, 5, 5), (*RED, 255), 30)
        assert close(colour_at(out, 160, 236), (*GREEN, 255), 30)


def test_deadline_in_the_past() -> None:
    with pytest.raises(DeadlineExceeded) as err:
        run(jpeg(), ops(Resize(width=10)), limits=LIMITS, deadline=time.monotonic() - 1)
    assert err.value.reason == DEADLINE_EXCEEDED
    assert not err.value.retryable


def test_deadline_between_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(1000))
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: float(next(ticks)))
    # The clock advances one second per check: probe (0), validate (1), decode (2), orient (3).
    with pytest.raises(DeadlineExceeded, match="orient"):
        run(jpeg(), ops(Resize(width=10)), limits=LIMITS, deadline=3)


@pytest.mark.parametrize(
    ("operations", "reason", "field"),
    [
        ([operations_pb2.Operation()], UNKNOWN_OPERATION, "operations[0]"),
        (ops(Resize(width=10), Denoise(auto=True)), UNSUPPORTED_OPERATION, "operations[1].denoise"),
    ],
)
def test_operations_imaging_cannot_run_are_rejected(
    operations: list[operations_pb2.Operation], reason: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        run(jpeg(), operations, limits=LIMITS)
    assert err.value.reason == reason
    assert err.value.violations[0].field == field


def test_truncated_pixel_data_is_corrupt_not_a_crash() -> None:
    data = jpeg(640, 480)
    with pytest.raises(InvalidArgument) as err:
        run(data[: len(data) // 2], ops(Resize(width=100)), limits=LIMITS)
    assert err.value.reason == IMAGE_CORRUPT
    assert "Traceback" not in err.value.message and "decoder" not in err.value.message


def test_garbage_after_a_valid_png_header_is_corrupt() -> None:
    data = bytearray(encode(scene(), "PNG"))
    data[60:200] = bytes(140)  # inside IDAT
    with pytest.raises(InvalidArgument) as err:
        run(bytes(data), [], limits=LIMITS)
    assert err.value.reason == IMAGE_CORRUPT


def test_pixel_limit_before_decoding() -> None:
    with pytest.raises(InvalidArgument) as err:
        run(jpeg(320, 240), [], limits=Limits(max_pixels=320 * 240 - 1))
    assert err.value.reason == TOO_MANY_PIXELS


def test_multi_page_tiff_uses_the_first_page_and_says_so() -> None:
    pages = [scene(), Image.new("RGB", (100, 80), BLUE)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    result = run(data, ops(Resize(width=160)), limits=LIMITS).image
    assert result.flattened and result.frames == 1
    assert close(colour_at(decode(result.data), 3, 3), (*RED, 255))


def test_multi_picture_jpeg_uses_the_primary_image() -> None:
    primary, gain_map = scene(640, 480), Image.new("RGB", (320, 240), BLUE)
    buf = io.BytesIO()
    primary.save(buf, "MPO", save_all=True, append_images=[gain_map], quality=95)
    result = run(buf.getvalue(), ops(Resize(width=160)), limits=LIMITS).image  # drafted, too
    assert result.format == image_pb2.JPEG and not result.flattened
    out = decode(result.data)
    assert out.size == (160, 120) and close(colour_at(out, 3, 3), (*RED, 255))
    assert "mp" not in out.info  # a plain JPEG, not an MPO


def test_transparent_png_to_jpeg_lands_on_white() -> None:
    img = Image.new("RGBA", (20, 20), (0, 0, 255, 0))
    result = run(encode(img, "PNG"), ops(Convert(format=image_pb2.JPEG)), limits=LIMITS).image
    assert close(colour_at(decode(result.data), 10, 10), (255, 255, 255, 255), 3)


def test_palette_gif_with_transparency_keeps_alpha_in_png() -> None:
    img = Image.new("P", (20, 20), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(0, (0, 0, 10, 20))
    data = encode(img, "GIF", transparency=0)
    out = decode(run(data, ops(Convert(format=image_pb2.PNG)), limits=LIMITS).image.data)
    assert out.mode == "RGBA"
    assert colour_at(out, 2, 2)[3] == 0 and colour_at(out, 15, 2) == (255, 0, 0, 255)


def test_bmp_becomes_png_and_heif_becomes_jpeg() -> None:
    assert run(encode(scene(), "BMP"), [], limits=LIMITS).image.format == image_pb2.PNG
    heif = encode(scene(), "HEIF", quality=90)
    result = run(heif, ops(Rotate(angle=90)), limits=LIMITS).image
    assert result.format == image_pb2.JPEG and (result.width, result.height) == (240, 320)
    assert close(colour_at(decode(result.data), 235, 5), (*RED, 255), 30)


def test_avif_input_and_output() -> None:
    avif = encode(scene(), "AVIF", quality=90)
    result = run(avif, ops(Resize(width=160)), limits=LIMITS).image
    assert result.format == image_pb2.AVIF and decode(result.data).size == (160, 120)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("1", "L"),
        ("L", "L"),
        ("LA", "LA"),
        ("RGB", "RGB"),
        ("RGBA", "RGBA"),
        ("P", "RGB"),
        ("PA", "RGBA"),
        ("CMYK", "RGB"),
        ("YCbCr", "RGB"),
        ("I;16", "L"),
        ("I", "L"),
        ("F", "L"),
        ("La", "LA"),
        ("RGBa", "RGBA"),
    ],
)
def test_normalize_mode(mode: str, expected: str) -> None:
    assert normalize_mode(Image.new(mode, (4, 4))).mode == expected


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (4, 4), 40000)
    assert normalize_mode(img).getpixel((0, 0)) == round(40000 / 257)


def test_colour_key_transparency_becomes_alpha() -> None:
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    img.info["transparency"] = (1, 2, 3)
    out = normalize_mode(img)
    assert out.mode == "RGBA" and colour_at(out, 0, 0)[3] == 0


def test_an_unpredictable_size_is_checked_when_known() -> None:
    # Trim's output size depends on the pixels: the final size is checked after the operations.
    data = encode(scene(), "PNG")
    with pytest.raises(InvalidArgument) as err:
        run(data, ops(Trim(color="#000000")), limits=Limits(max_output_dimension=300))
    assert err.value.reason == OUTPUT_TOO_LARGE and err.value.violations[0].field == "operations"


def test_a_kept_profile_that_no_longer_fits_the_pixels_is_dropped() -> None:
    icc = icc_profile("wide", SRGB_GREEN, SRGB_RED, SRGB_BLUE)
    data = encode(scene(), "PNG", icc_profile=icc)
    keep = Convert(format=image_pb2.PNG, keep_icc=True)
    assert decode(run(data, ops(keep), limits=LIMITS).image.data).info["icc_profile"] == icc
    grey = decode(run(data, ops(Grayscale(), keep), limits=LIMITS).image.data)
    assert grey.mode == "L" and "icc_profile" not in grey.info  # an RGB profile on grey pixels


def test_heif_with_alpha_becomes_png() -> None:
    heif = encode(scene(mode="RGBA"), "HEIF", quality=90)
    result = run(heif, [], limits=LIMITS).image
    assert result.format == image_pb2.PNG and decode(result.data).mode == "RGBA"


@pytest.mark.parametrize(("mode", "chosen"), [("RGBA", image_pb2.PNG), ("RGB", image_pb2.JPEG)])
def test_heif_with_convert_auto_follows_the_one_rule(mode: str, chosen: int) -> None:
    """The gateway leaves `auto` for inputs pixmesh cannot write; a HEIF then becomes what a job
    without a Convert makes of it (PNG with alpha, else JPEG), not always JPEG as it once did."""
    heif = encode(scene(mode=mode), "HEIF", quality=90)
    result = run(heif, ops(Convert(auto=True, quality=80)), limits=LIMITS).image
    assert result.format == chosen
