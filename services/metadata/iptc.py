"""IPTC-IIM (the "IPTC" block of JPEG APP13 and TIFF) read into the `Iptc` message.

IIM text has no fixed encoding: UTF-8 when record 1:90 says so (ESC % G), otherwise whatever the
writing tool used, usually Latin-1. Valid UTF-8 is taken as such; anything else is decoded as
Latin-1 (every byte is a character there) and noted.
"""

from __future__ import annotations

from typing import Final

from PIL import Image, IptcImagePlugin

from pixmesh.common.v1 import metadata_pb2
from services.metadata.text import Notes, clean

MAX_TEXT_CHARS: Final = 2000
MAX_KEYWORDS: Final = 64
_SECTION: Final = "iptc"

# Record 2 dataset -> (field, IIM name used in notes).
_SINGLE: Final = {
    5: ("object_name", "ObjectName"),
    105: ("headline", "Headline"),
    120: ("caption", "Caption"),
    110: ("credit", "Credit"),
    115: ("source", "Source"),
    116: ("copyright", "CopyrightNotice"),
    90: ("city", "City"),
    95: ("province_state", "ProvinceState"),
    101: ("country", "Country"),
}
_KEYWORDS: Final = 25
_BYLINE: Final = 80
_DATE: Final = 55
_TIME: Final = 60


def read(image: Image.Image, notes: Notes) -> metadata_pb2.Iptc | None:
    try:
        info = IptcImagePlugin.getiptcinfo(image)  # type: ignore[arg-type]
    except Exception:
        # Pillow's IIM reader raises assorted errors on a truncated or garbled block.
        notes.add(_SECTION, "unreadable IPTC block")
        return None
    if not info:
        return None
    out = metadata_pb2.Iptc()
    for dataset, (field, name) in _SINGLE.items():
        values = _texts(info.get((2, dataset)), name, notes)
        if values:
            setattr(out, field, values[0])
    out.keywords.extend(_texts(info.get((2, _KEYWORDS)), "Keywords", notes)[:MAX_KEYWORDS])
    if bylines := _texts(info.get((2, _BYLINE)), "Byline", notes):
        out.byline = "; ".join(bylines)[:MAX_TEXT_CHARS]
    if dates := _texts(info.get((2, _DATE)), "DateCreated", notes):
        times = _texts(info.get((2, _TIME)), "TimeCreated", notes)
        out.date_created = f"{dates[0]} {times[0]}" if times else dates[0]
    return out if out.ListFields() else None


def _texts(raw: bytes | list[bytes] | None, name: str, notes: Notes) -> list[str]:
    """Every value of a dataset (repeatable ones arrive as a list), decoded and cleaned."""
    if raw is None:
        return []
    values = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for value in values:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
            notes.add(_SECTION, f"{name} is not UTF-8; decoded as Latin-1")
        cleaned = clean(text, len(text))
        if len(cleaned) > MAX_TEXT_CHARS:
            cleaned = cleaned[:MAX_TEXT_CHARS]
            notes.add(_SECTION, f"{name} truncated to {MAX_TEXT_CHARS} characters")
        if cleaned:
            out.append(cleaned)
    return out
