"""Postgres adapter of the metadata store (schema `metadata`, see migrations/)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
from google.protobuf import json_format

from pixmesh.common.v1 import image_pb2, metadata_pb2

MIGRATIONS: Final = Path(__file__).with_name("migrations")
SCHEMA: Final = "metadata"

# Re-delivery of the same task writes the same document: the WHERE clause turns that into a
# no-op, so updated_at means "last changed" and the row is not rewritten for nothing.
_UPSERT: Final = """
INSERT INTO metadata.image_metadata AS m (
    tenant_id, sha256, format, width, height, mode, frame_count, size_bytes,
    make, model, date_taken, date_taken_offset, gps_latitude, gps_longitude, orientation, doc
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::text::jsonb)
ON CONFLICT (tenant_id, sha256) DO UPDATE SET
    format = EXCLUDED.format, width = EXCLUDED.width, height = EXCLUDED.height,
    mode = EXCLUDED.mode, frame_count = EXCLUDED.frame_count, size_bytes = EXCLUDED.size_bytes,
    make = EXCLUDED.make, model = EXCLUDED.model, date_taken = EXCLUDED.date_taken,
    date_taken_offset = EXCLUDED.date_taken_offset, gps_latitude = EXCLUDED.gps_latitude,
    gps_longitude = EXCLUDED.gps_longitude, orientation = EXCLUDED.orientation,
    doc = EXCLUDED.doc, updated_at = now()
WHERE m.doc IS DISTINCT FROM EXCLUDED.doc
"""

# doc travels as text both ways, so a jsonb codec set on the pool cannot double-encode it.
_GET: Final = "SELECT doc::text FROM metadata.image_metadata WHERE tenant_id = $1 AND sha256 = $2"


class MetadataRepository:
    """Implements the service's `MetadataStore` port."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def upsert(self, tenant_id: str, md: metadata_pb2.ImageMetadata) -> None:
        await self._pool.execute(_UPSERT, *_row(tenant_id, md))

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata | None:
        doc: str | None = await self._pool.fetchval(_GET, tenant_id, sha256)
        if doc is None:
            return None
        # Fields added by a later version of the proto are skipped, not fatal.
        return json_format.Parse(doc, metadata_pb2.ImageMetadata(), ignore_unknown_fields=True)


def to_json(md: metadata_pb2.ImageMetadata) -> str:
    """The stored document: proto3 JSON with proto field names, so SQL reads like the columns."""
    return json_format.MessageToJson(md, preserving_proto_field_name=True, indent=None)


def _row(tenant_id: str, md: metadata_pb2.ImageMetadata) -> tuple[Any, ...]:
    exif = md.exif
    gps = exif.gps if exif.HasField("gps") else None
    date_taken: datetime | None = None
    if exif.HasField("date_taken"):
        # Naive on purpose: the column is `timestamp` (camera wall-clock), see the migration.
        date_taken = exif.date_taken.ToDatetime()
    return (
        tenant_id,
        md.sha256,
        image_pb2.ImageFormat.Name(md.format),
        md.width,
        md.height,
        md.mode,
        md.frame_count,
        md.size_bytes,
        exif.make if exif.HasField("make") else None,
        exif.model if exif.HasField("model") else None,
        date_taken,
        exif.date_taken_offset if exif.HasField("date_taken_offset") else None,
        gps.latitude if gps else None,
        gps.longitude if gps else None,
        exif.orientation if exif.HasField("orientation") else None,
        to_json(md),
    )
