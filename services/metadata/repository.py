"""Postgres adapter of the metadata store (schema `metadata`, see migrations/).

Every statement is scoped by `tenant_id = $1`: a tenant's queries can never see another's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from google.protobuf import json_format

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import hashes
from services.metadata.search import Cursor

MIGRATIONS: Final = Path(__file__).with_name("migrations")
SCHEMA: Final = "metadata"

# The typed copies of the document kept beside it, in the order `_row` produces them.
_COLUMNS: Final = (
    "tenant_id", "sha256", "image_id", "format", "width", "height", "mode", "frame_count",
    "size_bytes", "bit_depth", "duration_ms", "make", "model", "lens_model", "iso", "f_number",
    "exposure_time_s", "focal_length_mm", "date_taken", "date_taken_offset", "gps_latitude",
    "gps_longitude", "gps_altitude_m", "orientation", "phash", "dhash", "doc_pb", "doc",
)  # fmt: skip
_KEY: Final = ("tenant_id", "sha256", "image_id")

# Re-delivery of the same work writes the same document: the WHERE clause turns that into a
# no-op, so updated_at means "last changed" and the row is not rewritten for nothing. A write
# without an image id (an extract_metadata job on a legacy row) keeps the one already there.
# created_at is the upload's time when the writer knows it (SearchImages pages "newest upload
# first", and indexing runs concurrently, so the row's own insert time would shuffle that order).
_UPLOADED_AT: Final = f"${len(_COLUMNS) + 1}::timestamptz"
_UPSERT: Final = f"""
INSERT INTO metadata.image_metadata AS m ({", ".join(_COLUMNS)}, created_at)
VALUES ({", ".join(f"${i}" for i in range(1, len(_COLUMNS)))}, ${len(_COLUMNS)}::text::jsonb,
        COALESCE({_UPLOADED_AT}, now()))
ON CONFLICT (tenant_id, sha256) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c not in _KEY)},
    image_id = COALESCE(EXCLUDED.image_id, m.image_id),
    created_at = COALESCE({_UPLOADED_AT}, m.created_at),
    updated_at = now()
WHERE m.doc IS DISTINCT FROM EXCLUDED.doc
   OR m.image_id IS DISTINCT FROM COALESCE(EXCLUDED.image_id, m.image_id)
   OR m.created_at IS DISTINCT FROM COALESCE({_UPLOADED_AT}, m.created_at)
"""

# Unique per tenant beside (tenant_id, sha256), the upsert's conflict target (migration 0002).
_IMAGE_ID_INDEX: Final = "image_metadata_image_id_idx"


# The document as read back: protobuf bytes, or (rows from before doc_pb) the JSON as text, so a
# jsonb codec set on the pool cannot double-decode it.
def _doc(table: str = "image_metadata") -> str:
    return f"{table}.doc_pb, CASE WHEN {table}.doc_pb IS NULL THEN {table}.doc::text END AS doc"


_GET: Final = f"SELECT {_doc()} FROM metadata.image_metadata WHERE tenant_id = $1 AND sha256 = $2"

_DISTANCE: Final = "bit_count((phash # $2)::bit(64))"
_BANDS: Final = (
    "((phash >> 48) & 65535)",
    "((phash >> 32) & 65535)",
    "((phash >> 16) & 65535)",
    "(phash & 65535)",
)


class MetadataRepository:
    """Where metadata is kept: the service's store (`MetadataStore` in service.py)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def upsert(
        self,
        tenant_id: str,
        md: metadata_pb2.ImageMetadata,
        image_id: str | None = None,
        uploaded_at: datetime | None = None,
    ) -> None:
        """Insert or replace; writing the same metadata twice is harmless. `uploaded_at` (when
        known) is the time searches order by; otherwise the row's first write."""
        args = (*_row(tenant_id, md, image_id), uploaded_at)
        try:
            await self._pool.execute(_UPSERT, *args)
        except asyncpg.UniqueViolationError as exc:
            # Two writers of a new image at once (an upload's indexing and an extract_metadata
            # job): both passed the ON CONFLICT check before either row existed; the arbiter
            # index let the second wait, but the image id index is not covered by ON CONFLICT
            # and failed it once the first committed. The row is there now: the same upsert
            # updates it. Another constraint, or a second failure, is a real conflict.
            if exc.constraint_name != _IMAGE_ID_INDEX:
                raise
            await self._pool.execute(_UPSERT, *args)

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata | None:
        row = await self._pool.fetchrow(_GET, tenant_id, sha256)
        return None if row is None else _document(row)

    async def delete(self, tenant_id: str, sha256s: list[str] | None) -> int:
        """Forget images of the tenant by content (a row holds the similarity hashes too), or
        all of them (`sha256s` None); returns how many rows went."""
        # Two statements, not `($2 IS NULL OR sha256 = ANY($2))`: a generic plan of that cannot
        # use the (tenant_id, sha256) index, and one image's delete would walk all the tenant's
        # rows.
        if sha256s is None:
            status: str = await self._pool.execute(
                "DELETE FROM metadata.image_metadata WHERE tenant_id = $1", tenant_id
            )
        else:
            status = await self._pool.execute(
                "DELETE FROM metadata.image_metadata WHERE tenant_id = $1"
                " AND sha256 = ANY($2::text[])",
                tenant_id,
                sha256s,
            )
        return int(status.rsplit(" ", 1)[1])

    async def search(
        self,
        tenant_id: str,
        f: metadata_pb2.ImageSearchFilter,
        limit: int,
        after: Cursor | None,
    ) -> list[tuple[metadata_pb2.ImageRecord, Cursor]]:
        """Up to `limit` uploaded images matching `f`, newest first, after `after`."""
        where = _Where(tenant_id)
        where.add("image_id IS NOT NULL")
        if f.camera_make:
            where.add("lower(make) = lower({})", f.camera_make)
        if f.camera_model:
            where.add("lower(model) = lower({})", f.camera_model)
        if f.HasField("taken_after"):
            where.add("date_taken >= {}", f.taken_after.ToDatetime())
        if f.HasField("taken_before"):
            where.add("date_taken < {}", f.taken_before.ToDatetime())
        if f.HasField("min_latitude"):
            where.add("gps_latitude BETWEEN {} AND {}", f.min_latitude, f.max_latitude)
            if f.min_longitude <= f.max_longitude:
                where.add("gps_longitude BETWEEN {} AND {}", f.min_longitude, f.max_longitude)
            else:  # the box crosses the antimeridian
                where.add("(gps_longitude >= {} OR gps_longitude <= {})", f.min_longitude, f.max_longitude)  # fmt: skip
        for column, low, high in (
            ("width", f.min_width, f.max_width),
            ("height", f.min_height, f.max_height),
        ):
            if low:
                where.add(f"{column} >= {{}}", low)
            if high:
                where.add(f"{column} <= {{}}", high)
        if f.formats:
            where.add(
                "format = ANY({}::text[])", [image_pb2.ImageFormat.Name(x) for x in f.formats]
            )
        if after is not None:
            where.add("(created_at, sha256) < ({}, {})", after.created_at, after.sha256)
        sql = (
            f"SELECT image_id, sha256, created_at, {_doc()} FROM metadata.image_metadata"
            f" WHERE {where.sql} ORDER BY created_at DESC, sha256 DESC LIMIT {int(limit)}"
        )
        rows = await self._pool.fetch(sql, *where.args)
        return [
            (
                metadata_pb2.ImageRecord(image_id=r["image_id"], metadata=_document(r)),
                Cursor(r["created_at"], r["sha256"]),
            )
            for r in rows
        ]

    async def similar(
        self,
        tenant_id: str,
        phash: int,
        max_distance: int,
        limit: int,
        exclude_sha256: str,
        probes: Sequence[Sequence[int]] | None,
    ) -> list[metadata_pb2.SimilarImage]:
        """Uploaded images whose pHash is within `max_distance` bits of `phash`, nearest first.

        `probes` (see search.band_probes) narrows the candidates through the band indexes;
        None scans the tenant's hashes.
        """
        args: list[Any] = [tenant_id, hashes.to_signed(phash), max_distance, exclude_sha256]
        # Each arm reads one index only (no heap) and keeps the hashes within the distance; the
        # documents are fetched for the nearest `limit` rows alone.
        arm = (
            f"SELECT sha256, {_DISTANCE} AS distance FROM metadata.image_metadata"
            " WHERE tenant_id = $1 AND phash IS NOT NULL AND image_id IS NOT NULL{band}"
            f" AND {_DISTANCE} <= $3"
        )
        if probes is None:
            candidates = arm.format(band="")
        else:
            arms = []
            for expression, values in zip(_BANDS, probes, strict=True):
                args.append(list(values))
                arms.append(arm.format(band=f" AND {expression} = ANY(${len(args)}::bigint[])"))
            candidates = " UNION ".join(arms)
        sql = f"""
            WITH near AS (
                SELECT sha256, distance FROM ({candidates}) AS c
                WHERE sha256 <> $4 ORDER BY distance, sha256 LIMIT {int(limit)}
            )
            SELECT m.image_id, near.distance, {_doc("m")}
            FROM near JOIN metadata.image_metadata AS m ON m.tenant_id = $1 AND m.sha256 = near.sha256
            ORDER BY near.distance, near.sha256
        """
        rows = await self._pool.fetch(sql, *args)
        return [
            metadata_pb2.SimilarImage(
                image_id=r["image_id"], distance=r["distance"], metadata=_document(r)
            )
            for r in rows
        ]


class _Where:
    """AND-ed conditions with numbered parameters; `{}` in a clause is the next parameter."""

    def __init__(self, tenant_id: str) -> None:
        self.clauses = ["tenant_id = $1"]
        self.args: list[Any] = [tenant_id]

    def add(self, clause: str, *values: Any) -> None:
        names = []
        for value in values:
            self.args.append(value)
            names.append(f"${len(self.args)}")
        self.clauses.append(clause.format(*names))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses)


def to_json(md: metadata_pb2.ImageMetadata) -> str:
    """The stored document: proto3 JSON with proto field names, so SQL reads like the columns."""
    return json_format.MessageToJson(md, preserving_proto_field_name=True, indent=None)


def _document(row: asyncpg.Record) -> metadata_pb2.ImageMetadata:
    if row["doc_pb"] is not None:
        return metadata_pb2.ImageMetadata.FromString(row["doc_pb"])
    # Fields added by a later version of the proto are skipped, not fatal.
    return json_format.Parse(row["doc"], metadata_pb2.ImageMetadata(), ignore_unknown_fields=True)


def _row(tenant_id: str, md: metadata_pb2.ImageMetadata, image_id: str | None) -> list[Any]:
    exif = md.exif
    gps = exif.gps if exif.HasField("gps") else None
    date_taken: datetime | None = None
    if exif.HasField("date_taken"):
        # Naive on purpose: the column is `timestamp` (camera wall-clock), see the migration.
        date_taken = exif.date_taken.ToDatetime()

    def opt(message: Any, field: str) -> Any:
        return getattr(message, field) if message.HasField(field) else None

    def hash_column(text: str) -> int | None:
        return hashes.to_signed(hashes.from_hex(text)) if text else None

    values = {
        "tenant_id": tenant_id,
        "sha256": md.sha256,
        "image_id": image_id or None,
        "format": image_pb2.ImageFormat.Name(md.format),
        "width": md.width,
        "height": md.height,
        "mode": md.mode,
        "frame_count": md.frame_count,
        "size_bytes": md.size_bytes,
        "bit_depth": md.bit_depth or None,
        "duration_ms": opt(md, "duration_ms"),
        "make": opt(exif, "make"),
        "model": opt(exif, "model"),
        "lens_model": opt(exif, "lens_model"),
        "iso": opt(exif, "iso"),
        "f_number": opt(exif, "f_number"),
        "exposure_time_s": opt(exif, "exposure_time_s"),
        "focal_length_mm": opt(exif, "focal_length_mm"),
        "date_taken": date_taken,
        "date_taken_offset": opt(exif, "date_taken_offset"),
        "gps_latitude": gps.latitude if gps else None,
        "gps_longitude": gps.longitude if gps else None,
        "gps_altitude_m": opt(gps, "altitude_m") if gps else None,
        "orientation": opt(exif, "orientation"),
        "phash": hash_column(md.perceptual_hashes.phash),
        "dhash": hash_column(md.perceptual_hashes.dhash),
        "doc_pb": md.SerializeToString(deterministic=True),
        "doc": to_json(md),
    }
    return [values[column] for column in _COLUMNS]
