"""Decode Pillow's raw EXIF view into the `Exif` message, one field at a time.

EXIF comes from cameras, phones and editors of every vintage, and from attackers. Each field is
decoded on its own: a field that is missing stays unset, a field that is present but unusable
stays unset and leaves a note ("<section>: <problem>") so the caller can see what was dropped.
Nothing here raises on bad data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from numbers import Real
from typing import Any, Final

from google.protobuf import timestamp_pb2
from PIL import ExifTags, Image

from pixmesh.common.v1 import metadata_pb2
from services.metadata.text import Notes

# Longest text kept from a string tag: real values are short, and a hostile one must not bloat
# every stored document and API response.
MAX_TEXT_CHARS: Final = 256

_Base = ExifTags.Base
_GPS = ExifTags.GPS
_DATETIME = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):(\d{2})")
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])\b')


def decode(exif: Image.Exif, notes: Notes, xmp: bytes | str | None = None) -> metadata_pb2.Exif:
    """Decode IFD0, the Exif IFD and the GPS IFD; `xmp` supplies a missing orientation."""
    out = metadata_pb2.Exif()
    _decode_ifd0(exif, out, notes)
    sub = _sub_ifd(exif, ExifTags.IFD.Exif, "exif.exif", notes)
    _decode_exif_ifd(sub, out, notes)
    gps = _sub_ifd(exif, ExifTags.IFD.GPSInfo, "exif.gps", notes)
    location = _decode_gps(gps, notes)
    if location is not None:
        out.gps.CopyFrom(location)
    if not out.HasField("orientation") and xmp:
        # Pillow's exif_transpose honours an XMP orientation too; report what it will apply.
        raw = xmp.encode("utf-8", "replace") if isinstance(xmp, str) else xmp
        if match := _XMP_ORIENTATION.search(raw):
            out.orientation = int(match[1])
    return out


def _decode_ifd0(exif: Mapping[int, Any], out: metadata_pb2.Exif, notes: Notes) -> None:
    section = "exif.ifd0"
    for tag, name, attr in (
        (_Base.Make, "Make", "make"),
        (_Base.Model, "Model", "model"),
        (_Base.Software, "Software", "software"),
        (_Base.Artist, "Artist", "artist"),
        (_Base.Copyright, "Copyright", "copyright"),
        (_Base.ImageDescription, "ImageDescription", "image_description"),
    ):
        if (text := _text(_get(exif, tag), name, section, notes)) is not None:
            setattr(out, attr, text)
    orientation = _get(exif, _Base.Orientation)
    if orientation is not None:
        value = _uint(orientation)
        if value is not None and 1 <= value <= 8:
            out.orientation = value
        else:
            notes.add(section, "malformed Orientation")


def _decode_exif_ifd(ifd: Mapping[int, Any], out: metadata_pb2.Exif, notes: Notes) -> None:
    section = "exif.exif"
    for text_tag, name, attr in (
        (_Base.LensModel, "LensModel", "lens_model"),
        (_Base.LensMake, "LensMake", "lens_make"),
    ):
        if (text := _text(ifd.get(text_tag), name, section, notes)) is not None:
            setattr(out, attr, text)

    # Digitized is the fallback: digital cameras write both, scanners only the latter.
    for when, offset_tag, subsec_tag, name in (
        (_Base.DateTimeOriginal, _Base.OffsetTimeOriginal, _Base.SubsecTimeOriginal, "Original"),
        (
            _Base.DateTimeDigitized,
            _Base.OffsetTimeDigitized,
            _Base.SubsecTimeDigitized,
            "Digitized",
        ),
    ):
        taken = _timestamp(ifd, when, subsec_tag, name, section, notes)
        if taken is None:
            continue
        out.date_taken.CopyFrom(taken)
        offset = _utc_offset(ifd.get(offset_tag), f"OffsetTime{name}", section, notes)
        if offset is not None:
            out.date_taken_offset = offset
        break

    positives: tuple[tuple[int, str, str], ...] = (
        (_Base.ExposureTime, "ExposureTime", "exposure_time_s"),
        (_Base.FNumber, "FNumber", "f_number"),
        (_Base.FocalLength, "FocalLength", "focal_length_mm"),
    )
    for tag, name, attr in positives:
        raw = ifd.get(tag)
        if raw is None:
            continue
        value = _real(raw)
        if value is not None and value > 0:
            setattr(out, attr, value)
        else:
            notes.add(section, f"malformed {name}")

    bias = ifd.get(_Base.ExposureBiasValue)
    if bias is not None:
        # Signed, and zero is a real value ("no compensation").
        if (ev := _real(bias)) is not None and abs(ev) <= 64:
            out.exposure_bias_ev = ev
        else:
            notes.add(section, "malformed ExposureBiasValue")

    focal35 = ifd.get(_Base.FocalLengthIn35mmFilm)
    if focal35 is not None:
        # 0 means "unknown" in the standard.
        if (mm := _uint(focal35)) is None:
            notes.add(section, "malformed FocalLengthIn35mmFilm")
        elif mm:
            out.focal_length_35mm = mm

    flash = ifd.get(_Base.Flash)
    if flash is not None:
        if (bits := _uint(flash)) is not None and bits <= 0xFFFF:
            out.flash_fired = bool(bits & 1)
        else:
            notes.add(section, "malformed Flash")

    iso = ifd.get(_Base.ISOSpeedRatings)
    if iso is not None:
        # Some writers store several values (one per sensitivity type); the first is the ISO.
        first = iso[0] if isinstance(iso, tuple) and iso else iso
        value = _uint(first)
        if value is not None and value > 0:
            out.iso = value
        else:
            notes.add(section, "malformed ISOSpeedRatings")


def _decode_gps(ifd: Mapping[int, Any], notes: Notes) -> metadata_pb2.GpsLocation | None:
    if not ifd:
        return None
    section = "exif.gps"
    has_lat = ifd.get(_GPS.GPSLatitude) is not None
    has_lon = ifd.get(_GPS.GPSLongitude) is not None
    if has_lat != has_lon:
        # Half a position is no position.
        notes.add(section, "missing GPSLongitude" if has_lat else "missing GPSLatitude")
        return None
    lat = _coordinate(ifd, _GPS.GPSLatitude, _GPS.GPSLatitudeRef, "NS", 90.0, notes)
    lon = _coordinate(ifd, _GPS.GPSLongitude, _GPS.GPSLongitudeRef, "EW", 180.0, notes)
    if lat is None or lon is None:
        return None
    location = metadata_pb2.GpsLocation(latitude=lat, longitude=lon)
    altitude = _altitude(ifd, notes)
    if altitude is not None:
        location.altitude_m = altitude
    return location


def _coordinate(
    ifd: Mapping[int, Any], tag: int, ref_tag: int, refs: str, limit: float, notes: Notes
) -> float | None:
    name = ExifTags.GPS(tag).name
    raw = ifd.get(tag)
    if raw is None:
        return None
    parts = raw if isinstance(raw, tuple) else (raw,)
    values = [_real(p) for p in parts]
    # Degrees, minutes, seconds; some writers keep only decimal degrees (and zeros).
    if not 1 <= len(values) <= 3 or any(v is None or v < 0 for v in values):
        notes.add("exif.gps", f"malformed {name}")
        return None
    degrees = sum(v / 60.0**i for i, v in enumerate(values) if v is not None)
    if degrees > limit:
        notes.add("exif.gps", f"malformed {name}")
        return None
    ref = _plain_text(ifd.get(ref_tag))
    ref = ref.strip().upper() if ref is not None else None
    if ref is None or len(ref) != 1 or ref not in refs:
        # Guessing the hemisphere would put the photo on the wrong side of the planet.
        notes.add("exif.gps", f"malformed {name}Ref")
        return None
    return -degrees if ref == refs[1] else degrees


def _altitude(ifd: Mapping[int, Any], notes: Notes) -> float | None:
    raw = ifd.get(_GPS.GPSAltitude)
    if raw is None:
        return None
    value = _real(raw)
    if value is None or value < 0:
        notes.add("exif.gps", "malformed GPSAltitude")
        return None
    ref = ifd.get(_GPS.GPSAltitudeRef)
    # The spec's default is 0 (above sea level). BYTE tags arrive as bytes.
    if isinstance(ref, bytes):
        ref = ref[0] if ref else None
    if ref is None or ref == 0:
        return value
    if ref == 1:
        return -value
    notes.add("exif.gps", "malformed GPSAltitudeRef")
    return None


def _timestamp(
    ifd: Mapping[int, Any], tag: int, subsec_tag: int, name: str, section: str, notes: Notes
) -> timestamp_pb2.Timestamp | None:
    text = _plain_text(ifd.get(tag))
    if text is None:
        return None
    text = text.strip()
    # The spec fills unknown dates with blanks or zeros; that means "absent", not "broken".
    if not text.strip(" :0-T"):
        return None
    match = _DATETIME.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        local = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        notes.add(section, f"malformed DateTime{name}")
        return None
    # Local wall-clock time, as recorded; the offset (if any) is reported beside it.
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(local)
    subsec = _plain_text(ifd.get(subsec_tag))
    if subsec is not None and (digits := subsec.strip()):
        if digits.isdigit() and digits.isascii():
            stamp.nanos = int(digits[:9].ljust(9, "0"))
        else:
            notes.add(section, f"malformed SubsecTime{name}")
    return stamp


def _utc_offset(raw: object, name: str, section: str, notes: Notes) -> str | None:
    text = _plain_text(raw)
    if text is None or not (text := text.strip()) or not text.strip(" :"):
        return None
    match = _OFFSET.fullmatch(text)
    if match is None or int(match[2]) > 14 or int(match[3]) > 59:
        notes.add(section, f"malformed {name}")
        return None
    return text


def _text(raw: object, name: str, section: str, notes: Notes) -> str | None:
    """A string tag as clean text: no NULs, valid UTF-8 (or replaced and noted), bounded."""
    if raw is None:
        return None
    if isinstance(raw, str):
        # Pillow decodes ASCII tags as Latin-1, which maps bytes 1:1; undo it to see the bytes.
        try:
            data = raw.encode("latin-1")
        except UnicodeEncodeError:
            data = raw.encode("utf-8", "replace")
    elif isinstance(raw, bytes):
        data = raw
    else:
        notes.add(section, f"malformed {name}")
        return None
    # NUL terminates each string (a tag may hold several); Postgres text cannot hold it at all.
    data = b" ".join(part for part in data.split(b"\x00") if part.strip())
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
        notes.add(section, f"{name} is not valid UTF-8; undecodable bytes replaced")
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
        notes.add(section, f"{name} truncated to {MAX_TEXT_CHARS} characters")
    return text or None


def _plain_text(raw: object) -> str | None:
    """ASCII-ish tag values (dates, refs), NUL-free; None for anything that is not text."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if not isinstance(raw, str):
        return None
    return raw.replace("\x00", "")


def _real(raw: object) -> float | None:
    """A finite number; rationals with a zero denominator decode as NaN and are refused."""
    if isinstance(raw, tuple) and len(raw) == 1:
        raw = raw[0]
    if isinstance(raw, bool) or not isinstance(raw, Real):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def _uint(raw: object) -> int | None:
    value = _real(raw)
    if value is None or not value.is_integer() or not 0 <= value < 2**32:
        return None
    return int(value)


def _get(exif: Mapping[int, Any], tag: int) -> Any:
    try:
        return exif.get(tag)
    except Exception:
        # Pillow unpacks a tag on first access; a mangled entry fails there.
        return None


def _sub_ifd(exif: Image.Exif, tag: int, section: str, notes: Notes) -> Mapping[int, Any]:
    """A nested IFD as a dict; {} (with a note if a pointer was there) when it cannot be read."""
    pointer = _get(exif, tag)
    if pointer is None:
        return {}
    try:
        ifd = exif.get_ifd(tag)
    except Exception:
        ifd = {}
    if not ifd:
        # A pointer to nothing: Pillow swallows bad offsets and truncation and returns {}.
        notes.add(section, "unreadable IFD")
    return ifd
