"""The pure half of SearchImages and FindSimilar: checking filters, page tokens, hash probes.

Page tokens are opaque to clients: the position of the last row returned plus a fingerprint of
the filter, so a token replayed with another filter is refused instead of skipping or repeating
rows silently.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Final

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata.hashes import HASH_BITS
from services.runtime.errors import FieldViolation, InvalidArgument, invalid

DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
DEFAULT_MAX_DISTANCE: Final = 10
# Beyond 32 of 64 bits, "similar" means nothing: unrelated images differ in about 32.
MAX_DISTANCE: Final = 32

BANDS: Final = 4
BAND_BITS: Final = HASH_BITS // BANDS
# Probing a band costs C(16, 0) + ... + C(16, r) index lookups for radius r = d // 4: 137 at
# r = 2 (d <= 11), 697 at r = 3 (d <= 15). Beyond that a scan of the tenant's hash index is
# cheaper than thousands of probes (measured with bench/metadata.py).
MAX_PROBE_RADIUS: Final = 3


@dataclass(frozen=True)
class Cursor:
    """Where a page ended, in the (created_at DESC, sha256 DESC) order of SearchImages."""

    created_at: datetime
    sha256: str


def page_size(requested: int) -> int:
    if requested > MAX_PAGE_SIZE:
        raise invalid("page_size", f"at most {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


def max_distance(requested: int | None) -> int:
    if requested is None:
        return DEFAULT_MAX_DISTANCE
    if requested > MAX_DISTANCE:
        raise invalid("max_distance", f"at most {MAX_DISTANCE}")
    return requested


def check_filter(f: metadata_pb2.ImageSearchFilter) -> None:
    """Raise InvalidArgument listing every problem of the filter."""
    problems: list[FieldViolation] = []
    box = ("min_latitude", "max_latitude", "min_longitude", "max_longitude")
    present = [name for name in box if f.HasField(name)]  # type: ignore[arg-type]
    if present and len(present) != len(box):
        problems += [
            FieldViolation(name, "required: a GPS box needs all four bounds")
            for name in box
            if name not in present
        ]
    for name in present:
        limit = 90.0 if "latitude" in name else 180.0
        if not -limit <= getattr(f, name) <= limit:
            problems.append(FieldViolation(name, f"must be within -{limit:g}..{limit:g}"))
    if len(present) == len(box) and f.min_latitude > f.max_latitude:
        problems.append(FieldViolation("min_latitude", "must not be above max_latitude"))
    for low, high in (("min_width", "max_width"), ("min_height", "max_height")):
        if getattr(f, high) and getattr(f, low) > getattr(f, high):
            problems.append(FieldViolation(low, f"must not be above {high}"))
    known = image_pb2.ImageFormat.values()
    problems += [
        FieldViolation(f"formats[{i}]", f"{fmt} is not an image format")
        for i, fmt in enumerate(f.formats)
        if fmt not in known
    ]
    if (
        f.HasField("taken_after")
        and f.HasField("taken_before")
        and f.taken_after.ToDatetime() >= f.taken_before.ToDatetime()
    ):
        problems.append(FieldViolation("taken_after", "must be before taken_before"))
    if problems:
        raise InvalidArgument(
            message="; ".join(f"{p.field}: {p.description}" for p in problems),
            reason="INVALID_SEARCH_FILTER",
            violations=tuple(problems),
        )


def encode_token(cursor: Cursor, f: metadata_pb2.ImageSearchFilter) -> str:
    raw = json.dumps(
        {"t": cursor.created_at.isoformat(), "s": cursor.sha256, "f": _fingerprint(f)},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(token: str, f: metadata_pb2.ImageSearchFilter) -> Cursor:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = Cursor(datetime.fromisoformat(raw["t"]), str(raw["s"]))
        fingerprint = raw["f"]
    except (ValueError, TypeError, KeyError) as exc:
        raise invalid("page_token", "malformed page token", "BAD_PAGE_TOKEN") from exc
    if fingerprint != _fingerprint(f):
        raise invalid("page_token", "the page token belongs to another filter", "BAD_PAGE_TOKEN")
    return cursor


def band_probes(phash: int, distance: int) -> list[list[int]] | None:
    """For each 16-bit band of `phash`, the band values within distance // 4 bits of it.

    Any hash within `distance` of `phash` has at least one band among these (pigeonhole); None
    when the radius is too large for probing to beat a scan.
    """
    radius = distance // BANDS
    if radius > MAX_PROBE_RADIUS:
        return None
    masks = _masks(radius)
    probes = []
    for band in range(BANDS):
        shift = HASH_BITS - BAND_BITS * (band + 1)
        value = (phash >> shift) & ((1 << BAND_BITS) - 1)
        probes.append([value ^ mask for mask in masks])
    return probes


@cache
def _masks(radius: int) -> tuple[int, ...]:
    """Every 16-bit mask with at most `radius` bits set."""
    return tuple(
        sum(1 << bit for bit in bits)
        for r in range(radius + 1)
        for bits in itertools.combinations(range(BAND_BITS), r)
    )


def _fingerprint(f: metadata_pb2.ImageSearchFilter) -> str:
    return hashlib.sha256(f.SerializeToString(deterministic=True)).hexdigest()[:16]
