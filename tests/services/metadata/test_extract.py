from __future__ import annotations

import hashlib
import io
import random
from datetime import datetime

import pytest
from PIL import Image, ImageCms, PngImagePlugin
from PIL.TiffImagePlugin import IFDRational

from pixmesh.common.v1 import image_pb2
from services.metadata import hashes
from services.metadata.exif import MAX_TEXT_CHARS
from services.metadata.extract import extract
from services.metadata.text import Notes
from services.metadata.xmp import MAX_XMP_BYTES
from services.runtime.errors import InvalidArgument

from .images import (
    Entry,
    ascii_,
    byte,
    dms,
    insert_segment,
    iptc_app13,
    jpeg,
    long_,
    rational,
    scene,
    short,
    tiff,
)

# Pillow reports the corrupt EXIF these tests feed it with a UserWarning; that is expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")

EXIF_IFD, GPS_IFD = 0x8769, 0x8825


def camera_exif(lat_ref: str = "N", lon_ref: str = "E", alt_ref: int = 0) -> Image.Exif:
    """What a real camera writes, through Pillow's own writer."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    exif[0x0112] = 6
    exif[0x0131] = "Firmware 1.8.1"
    sub = exif.get_ifd(EXIF_IFD)
    sub[0xA434] = "RF24-105mm F4 L IS USM"
    sub[0x9003] = "2024:05:01 12:34:56"
    sub[0x9011] = "+02:00"
    sub[0x9291] = "25"
    sub[0x829A] = IFDRational(1, 250)
    sub[0x829D] = IFDRational(28, 10)
    sub[0x8827] = 400
    sub[0x920A] = IFDRational(105, 1)
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = lat_ref
    gps[2] = (IFDRational(33, 1), IFDRational(51, 1), IFDRational(3564, 100))
    gps[3] = lon_ref
    gps[4] = (IFDRational(151, 1), IFDRational(12, 1), IFDRational(36, 1))
    gps[5] = bytes([alt_ref])
    gps[6] = IFDRational(1055, 10)
    return exif


def full_exif() -> Image.Exif:
    """A camera's EXIF plus the less common standard tags."""
    exif = camera_exif()
    exif[0x013B] = "Ada Lovelace"  # Artist
    exif[0x8298] = "(c) 2024 Ada"  # Copyright
    exif[0x010E] = "Harbour at dawn"  # ImageDescription
    sub = exif.get_ifd(EXIF_IFD)
    sub[0xA433] = "Canon"  # LensMake
    sub[0x9204] = IFDRational(-2, 3)  # ExposureBiasValue
    sub[0x9209] = 0x19  # Flash: fired, auto mode
    sub[0xA405] = 168  # FocalLengthIn35mmFilm
    return exif


def test_full_exif_from_a_camera() -> None:
    data = jpeg(camera_exif(), size=(64, 48))

    md = extract(data)

    assert md.format == image_pb2.JPEG
    assert (md.width, md.height, md.mode, md.frame_count) == (64, 48, "RGB", 1)
    assert md.size_bytes == len(data)
    assert md.sha256 == hashlib.sha256(data).hexdigest()
    assert list(md.warnings) == []
    exif = md.exif
    assert (exif.make, exif.model, exif.software) == ("Canon", "Canon EOS R5", "Firmware 1.8.1")
    assert exif.lens_model == "RF24-105mm F4 L IS USM"
    assert exif.orientation == 6
    # Wall-clock time as recorded, offset beside it; sub-seconds "25" are 0.25 s.
    assert exif.date_taken.ToDatetime() == datetime(2024, 5, 1, 12, 34, 56, 250000)
    assert exif.date_taken_offset == "+02:00"
    assert exif.exposure_time_s == pytest.approx(1 / 250)
    assert exif.f_number == pytest.approx(2.8)
    assert exif.iso == 400
    assert exif.focal_length_mm == pytest.approx(105.0)
    assert exif.gps.latitude == pytest.approx(33 + 51 / 60 + 35.64 / 3600)
    assert exif.gps.longitude == pytest.approx(151 + 12 / 60 + 36 / 3600)
    assert exif.gps.altitude_m == pytest.approx(105.5)


@pytest.mark.parametrize(
    ("lat_ref", "lon_ref", "alt_ref", "signs"),
    [("N", "E", 0, (1, 1, 1)), ("S", "W", 1, (-1, -1, -1)), ("S", "E", 0, (-1, 1, 1))],
)
def test_gps_hemispheres_and_below_sea_level(
    lat_ref: str, lon_ref: str, alt_ref: int, signs: tuple[int, int, int]
) -> None:
    gps = extract(jpeg(camera_exif(lat_ref, lon_ref, alt_ref))).exif.gps

    assert gps.latitude == pytest.approx(signs[0] * 33.859900)
    assert gps.longitude == pytest.approx(signs[1] * 151.21)
    assert gps.altitude_m == pytest.approx(signs[2] * 105.5)


def test_gps_without_altitude_leaves_it_unset() -> None:
    block = tiff([], gps=[ascii_(1, "N"), dms(2, 48, 51, 2400), ascii_(3, "E"), dms(4, 2, 21, 0)])

    gps = extract(jpeg(block)).exif.gps

    assert gps.latitude == pytest.approx(48 + 51 / 60 + 24 / 3600)
    assert gps.longitude == pytest.approx(2 + 21 / 60)
    assert not gps.HasField("altitude_m")


def test_missing_fields_stay_unset_without_warnings() -> None:
    md = extract(jpeg(tiff([ascii_(0x010F, "Fujifilm")])))

    assert md.exif.make == "Fujifilm"
    for name in ("model", "lens_model", "date_taken", "orientation", "gps", "iso", "f_number"):
        assert not md.exif.HasField(name), name
    assert list(md.warnings) == []


def test_image_without_exif_has_no_exif_message() -> None:
    md = extract(jpeg())

    assert not md.HasField("exif")
    assert list(md.warnings) == []


def test_malformed_values_are_dropped_with_a_note_and_the_rest_kept() -> None:
    block = tiff(
        [ascii_(0x010F, "Nikon"), short(0x0112, 9), rational(0x0110, (1, 2))],
        exif=[
            rational(0x829A, (1, 0)),  # zero denominator
            rational(0x829D, (0, 0)),
            ascii_(0x8827, "fast"),  # ISO as text
            ascii_(0x9003, "2024:13:45 25:61:00"),  # impossible date
            rational(0x920A, (50, 1)),
        ],
    )

    md = extract(jpeg(block))

    assert md.exif.make == "Nikon"
    assert md.exif.focal_length_mm == 50.0
    for name in ("model", "orientation", "exposure_time_s", "f_number", "iso", "date_taken"):
        assert not md.exif.HasField(name), name
    assert set(md.warnings) == {
        "exif.ifd0: malformed Model",
        "exif.ifd0: malformed Orientation",
        "exif.exif: malformed ExposureTime",
        "exif.exif: malformed FNumber",
        "exif.exif: malformed ISOSpeedRatings",
        "exif.exif: malformed DateTimeOriginal",
    }


@pytest.mark.parametrize(
    ("gps", "warning"),
    [
        # wrong types
        ([ascii_(1, "N"), ascii_(2, "forty"), ascii_(3, "E"), dms(4, 1, 2, 3)], "GPSLatitude"),
        ([ascii_(1, "N"), dms(2, 1, 2, 3), ascii_(3, "E"), short(4, 7, 8, 9, 10)], "GPSLongitude"),
        # zero denominators
        (
            [ascii_(1, "N"), rational(2, (10, 1), (0, 0), (0, 1)), ascii_(3, "E"), dms(4, 1, 2, 3)],
            "GPSLatitude",
        ),
        # out of range: 95 degrees north
        ([ascii_(1, "N"), dms(2, 95, 0, 0), ascii_(3, "E"), dms(4, 1, 2, 3)], "GPSLatitude"),
        # a reference that is no hemisphere, or none at all
        ([ascii_(1, "Q"), dms(2, 1, 2, 3), ascii_(3, "E"), dms(4, 1, 2, 3)], "GPSLatitudeRef"),
        ([ascii_(1, "N"), dms(2, 1, 2, 3), dms(4, 1, 2, 3)], "GPSLongitudeRef"),
    ],
)
def test_malformed_gps_drops_the_position(gps: list[Entry], warning: str) -> None:
    md = extract(jpeg(tiff([ascii_(0x010F, "Apple")], gps=gps)))

    assert md.exif.make == "Apple"
    assert not md.exif.HasField("gps")
    assert list(md.warnings) == [f"exif.gps: malformed {warning}"]


def test_half_a_position_is_noted() -> None:
    md = extract(jpeg(tiff([], gps=[ascii_(1, "N"), dms(2, 10, 0, 0)])))

    assert not md.HasField("exif")
    assert list(md.warnings) == ["exif.gps: missing GPSLongitude"]


def test_bad_altitude_keeps_the_position() -> None:
    gps = [ascii_(1, "N"), dms(2, 1, 0, 0), ascii_(3, "E"), dms(4, 2, 0, 0)]

    zero_denominator = extract(jpeg(tiff([], gps=[*gps, byte(5, 0), rational(6, (5, 0))])))
    unknown_ref = extract(jpeg(tiff([], gps=[*gps, byte(5, 7), rational(6, (5, 1))])))

    for md, note in ((zero_denominator, "GPSAltitude"), (unknown_ref, "GPSAltitudeRef")):
        assert md.exif.gps.latitude == 1.0
        assert not md.exif.gps.HasField("altitude_m")
        assert list(md.warnings) == [f"exif.gps: malformed {note}"]


def test_garbage_exif_block_is_noted_and_the_image_still_read() -> None:
    md = extract(jpeg(b"\x13\x37 this is not a TIFF header" * 4, size=(40, 30)))

    assert (md.format, md.width, md.height) == (image_pb2.JPEG, 40, 30)
    assert not md.HasField("exif")
    assert list(md.warnings) == ["exif: unreadable EXIF block"]


def test_truncated_ifd0_is_noted() -> None:
    # A valid TIFF header whose IFD0 offset points past the end of the block.
    data = insert_segment(jpeg(), 0xE1, b"Exif\x00\x00II*\x00\xff\xff\x00\x00" + b"z" * 20)

    md = extract(data)

    assert not md.HasField("exif")
    assert list(md.warnings) == ["exif: unreadable IFD0"]


def test_garbage_app1_that_is_not_exif_is_ignored() -> None:
    data = insert_segment(jpeg(size=(16, 8)), 0xE1, b"\x00\x01garbage\xff\xfe" * 50)

    md = extract(data)

    assert (md.width, md.height) == (16, 8)
    assert not md.HasField("exif")
    assert list(md.warnings) == []


def test_dangling_ifd_pointers_are_noted() -> None:
    block = tiff([ascii_(0x010F, "Sony"), long_(EXIF_IFD, 99_999), ascii_(GPS_IFD, "nowhere")])

    md = extract(jpeg(block))

    assert md.exif.make == "Sony"
    assert set(md.warnings) == {"exif.exif: unreadable IFD", "exif.gps: unreadable IFD"}


def test_strings_are_cleaned_and_non_utf8_is_replaced_and_noted() -> None:
    block = tiff(
        [
            ascii_(0x010F, b"Ca\xffnon"),  # Latin-1 / garbage, not UTF-8
            ascii_(0x0110, "Modèle Été".encode()),  # proper UTF-8
            ascii_(0x0131, b"\x00\x00Lightroom\x00\x00\x00"),  # NUL padding on both sides
        ]
    )

    md = extract(jpeg(block))

    assert md.exif.make == "Ca\ufffdnon"
    assert md.exif.model == "Modèle Été"
    assert md.exif.software == "Lightroom"
    assert list(md.warnings) == ["exif.ifd0: Make is not valid UTF-8; undecodable bytes replaced"]


def test_overlong_strings_are_truncated() -> None:
    md = extract(jpeg(tiff([ascii_(0x0110, "X" * 5000)])))

    assert md.exif.model == "X" * MAX_TEXT_CHARS
    assert list(md.warnings) == [f"exif.ifd0: Model truncated to {MAX_TEXT_CHARS} characters"]


def test_date_falls_back_to_digitized_and_blank_dates_are_absent() -> None:
    block = tiff(
        [],
        exif=[
            ascii_(0x9003, "    :  :     :  :  "),  # "unknown" per the spec: not an error
            ascii_(0x9004, "2020:01:02 03:04:05"),
            ascii_(0x9012, "CEST"),  # not an offset
        ],
    )

    md = extract(jpeg(block))

    assert md.exif.date_taken.ToDatetime() == datetime(2020, 1, 2, 3, 4, 5)
    assert not md.exif.HasField("date_taken_offset")
    assert list(md.warnings) == ["exif.exif: malformed OffsetTimeDigitized"]


def test_huge_xmp_packet_does_not_disturb_exif() -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b" " * 64_000 + b"</x:xmpmeta>"

    md = extract(jpeg(camera_exif(), xmp=xmp))

    assert md.exif.make == "Canon"
    assert md.exif.orientation == 6  # EXIF wins over XMP
    assert list(md.warnings) == []


def test_huge_xmp_in_png_is_skipped_with_a_note_and_its_orientation_still_used() -> None:
    packet = "<rdf:Description " + "a" * 3_000_000 + ' tiff:Orientation="8"/>'
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet)
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, "PNG", pnginfo=info)

    md = extract(out.getvalue())

    assert md.format == image_pb2.PNG
    assert md.exif.orientation == 8
    assert dict(md.xmp) == {}
    assert list(md.warnings) == [
        f"xmp: packet of {len(packet)} bytes is over the {MAX_XMP_BYTES} limit; skipped"
    ]


def test_png_without_exif() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (7, 5)).save(out, "PNG")

    md = extract(out.getvalue())

    assert (md.format, md.width, md.height, md.mode, md.frame_count) == (
        image_pb2.PNG,
        7,
        5,
        "RGBA",
        1,
    )
    assert not md.HasField("exif")
    assert list(md.warnings) == []


def test_truncated_pixels_keep_the_header_metadata_and_say_what_is_missing() -> None:
    # Header intact, pixel data cut off: metadata is still all there, EXIF (eXIf) included.
    exif = Image.Exif()
    exif[0x010F] = "Pentax"
    out = io.BytesIO()
    Image.effect_noise((256, 256), 50).save(out, "PNG", exif=exif)
    truncated = out.getvalue()[: len(out.getvalue()) // 2]

    md = extract(truncated)

    assert (md.format, md.width, md.height, md.mode) == (image_pb2.PNG, 256, 256, "L")
    assert md.exif.make == "Pentax"
    for name in ("colors", "placeholders", "perceptual_hashes"):
        assert not md.HasField(name), name
    assert list(md.warnings) == [
        "pixels: image data could not be decoded; colours, placeholders and hashes omitted"
    ]


def test_gif_frames_are_counted() -> None:
    # Distinct content: Pillow merges identical consecutive frames.
    frames = [Image.new("RGB", (12, 9), (i * 50, 255 - i * 50, 0)) for i in range(5)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=40)

    md = extract(out.getvalue())

    assert (md.format, md.width, md.height, md.mode) == (image_pb2.GIF, 12, 9, "P")
    assert md.frame_count == 5
    assert list(md.warnings) == []


def test_animated_webp_with_exif() -> None:
    exif = Image.Exif()
    exif[0x0110] = "Pixel 9"
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], exif=exif)

    md = extract(out.getvalue())

    assert (md.format, md.frame_count, md.exif.model) == (image_pb2.WEBP, 3, "Pixel 9")


def test_tiff_tags_are_read_from_its_own_ifd() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Hasselblad"
    exif[0x0112] = 3
    out = io.BytesIO()
    Image.new("RGB", (9, 4)).save(out, "TIFF", exif=exif)

    md = extract(out.getvalue())

    assert (md.format, md.width, md.height) == (image_pb2.TIFF, 9, 4)
    assert (md.exif.make, md.exif.orientation) == ("Hasselblad", 3)


def test_mpo_is_reported_as_jpeg() -> None:
    out = io.BytesIO()
    left, right = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    left.save(out, "MPO", save_all=True, append_images=[right])

    md = extract(out.getvalue())

    assert (md.format, md.frame_count) == (image_pb2.JPEG, 2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        b"\xff\xd8\xff\xe0" + b"\x00" * 10,  # JPEG magic, nothing after
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 30,  # PNG magic, broken IHDR
        b"P6\n4 4\n255\n" + b"\x00" * 48,  # a valid PPM: a format we do not accept
    ],
)
def test_unreadable_images_are_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as err:
        extract(data)

    assert err.value.reason == "IMAGE_CORRUPT"
    assert not err.value.retryable


def test_decompression_bomb_is_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    data = jpeg(size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with pytest.raises(InvalidArgument) as err:
        extract(data)

    assert err.value.reason == "IMAGE_TOO_LARGE"


def test_notes_are_deduplicated_and_capped() -> None:
    notes = Notes(limit=3)
    for i in range(10):
        notes.add("exif", f"problem {i}")
        notes.add("exif", f"problem {i}")

    assert notes.items == [
        "exif: problem 0",
        "exif: problem 1",
        "exif: problem 2",
        "warnings: 7 more omitted",
    ]


@pytest.mark.parametrize(("fmt", "expected"), [("AVIF", image_pb2.AVIF), ("HEIF", image_pb2.HEIF)])
def test_avif_and_heif_with_exif(fmt: str, expected: int) -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()  # the HEIF encoder, for building the fixture
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    out = io.BytesIO()
    Image.new("RGB", (16, 12), "red").save(out, fmt, exif=exif, quality=50)

    md = extract(out.getvalue())

    assert (md.format, md.width, md.height, md.exif.make) == (expected, 16, 12, "Apple")
    assert list(md.warnings) == []


def test_mangled_exif_never_breaks_extraction() -> None:
    # Seeded byte flips inside the EXIF block: every outcome must be metadata, never an error.
    base = jpeg(camera_exif())
    start = base.index(b"Exif\x00\x00") + 6
    end = start - 8 + int.from_bytes(base[start - 8 : start - 6], "big")
    rng = random.Random(20240501)
    noted = 0
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(start, end)] = rng.randrange(256)
        md = extract(bytes(data))
        assert (md.width, md.height) == (32, 24)
        noted += bool(md.warnings)
    assert noted > 50  # the mutations did hit something


def test_less_common_standard_tags() -> None:
    md = extract(jpeg(full_exif()))

    exif = md.exif
    assert (exif.artist, exif.copyright) == ("Ada Lovelace", "(c) 2024 Ada")
    assert exif.image_description == "Harbour at dawn"
    assert exif.lens_make == "Canon"
    assert exif.exposure_bias_ev == pytest.approx(-2 / 3)
    assert exif.flash_fired is True
    assert exif.focal_length_35mm == 168
    assert list(md.warnings) == []


def test_malformed_less_common_tags_are_noted() -> None:
    block = tiff(
        [],
        exif=[
            ascii_(0x9209, "yes"),  # Flash as text
            rational(0x9204, (1, 0)),  # bias with a zero denominator
            short(0xA405, 0),  # 35 mm focal length "unknown": absent, not broken
        ],
    )

    md = extract(jpeg(block))

    for name in ("flash_fired", "exposure_bias_ev", "focal_length_35mm"):
        assert not md.exif.HasField(name), name
    assert set(md.warnings) == {
        "exif.exif: malformed Flash",
        "exif.exif: malformed ExposureBiasValue",
    }


def test_icc_profile_description() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", icc_profile=profile)

    md = extract(out.getvalue())

    assert md.icc_profile == "sRGB built-in"
    assert list(md.warnings) == []


def test_garbage_icc_profile_is_noted() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", icc_profile=b"not a profile" * 20)

    md = extract(out.getvalue())

    assert not md.HasField("icc_profile")
    assert list(md.warnings) == ["icc: unreadable ICC profile"]


@pytest.mark.parametrize(
    ("mode", "fmt", "bits"),
    [("RGB", "JPEG", 8), ("I;16", "PNG", 16), ("1", "PNG", 1), ("P", "GIF", 8), ("RGB", "TIFF", 8)],
)
def test_bit_depth(mode: str, fmt: str, bits: int) -> None:
    out = io.BytesIO()
    Image.new(mode, (8, 8)).save(out, fmt)

    assert extract(out.getvalue()).bit_depth == bits


def test_sixteen_bit_pixels_are_scaled_not_clipped() -> None:
    out = io.BytesIO()
    Image.new("I;16", (16, 16), 128 * 257).save(out, "PNG")

    md = extract(out.getvalue())

    assert md.colors.average == "#808080"


def test_animation_duration_is_the_sum_of_frame_durations() -> None:
    frames = [Image.new("RGB", (12, 9), (i * 50, 255 - i * 50, 0)) for i in range(5)]
    out = io.BytesIO()
    frames[0].save(
        out, "GIF", save_all=True, append_images=frames[1:], duration=[40, 40, 60, 60, 100]
    )

    md = extract(out.getvalue())

    assert (md.frame_count, md.duration_ms) == (5, 300)
    still = extract(jpeg())
    assert not still.HasField("duration_ms")


def test_colours_palette_placeholders_and_hashes() -> None:
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    out = io.BytesIO()
    image.save(out, "PNG")

    md = extract(out.getvalue())

    assert md.colors.average == "#800080"
    palette = {(c.color, round(c.fraction, 2)) for c in md.colors.palette}
    assert palette == {("#ff0000", 0.5), ("#0000ff", 0.5)}
    assert md.placeholders.blurhash.startswith("L")  # 4x3 components: landscape
    assert len(md.placeholders.thumbhash) >= 5
    assert len(md.perceptual_hashes.phash) == len(md.perceptual_hashes.dhash) == 16
    assert extract(out.getvalue()) == md  # deterministic


def test_transparent_pixels_count_as_white() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(out, "PNG")

    md = extract(out.getvalue())

    assert md.colors.average == "#ffffff"
    assert md.placeholders.thumbhash[2] & 0x80  # ThumbHash keeps the alpha itself


def test_pixels_are_summarised_upright() -> None:
    upright = scene(7, (320, 240))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    sideways, straight = io.BytesIO(), io.BytesIO()
    stored.save(sideways, "JPEG", quality=90, exif=exif)
    upright.save(straight, "JPEG", quality=90)

    a, b = extract(sideways.getvalue()), extract(straight.getvalue())

    assert (a.width, a.height) == (240, 320)  # as stored
    phash_a = hashes.from_hex(a.perceptual_hashes.phash)
    phash_b = hashes.from_hex(b.perceptual_hashes.phash)
    assert hashes.distance(phash_a, phash_b) <= 2
    assert a.placeholders.blurhash[0] == b.placeholders.blurhash[0] == "L"  # landscape both


def test_xmp_iptc_and_exif_together() -> None:
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    data = insert_segment(jpeg(camera_exif(), xmp=xmp), 0xED, iptc_app13([(2, 25, b"harbour")]))

    md = extract(data)

    assert md.exif.make == "Canon"
    assert dict(md.xmp) == {"xmp:Rating": "5"}
    assert list(md.iptc.keywords) == ["harbour"]
    assert list(md.warnings) == []
