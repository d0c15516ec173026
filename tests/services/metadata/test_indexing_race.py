"""Concurrent indexing of one new image (issue 16): an upload's indexing and an extract_metadata
job upsert the same (tenant, sha256, image_id) at once. Both must end in one row, without an
error. The race is made to happen every time: a test-only trigger holds every insert at the
same point (before the ON CONFLICT check) until the test lets them all go at once."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata.repository import MIGRATIONS, SCHEMA, MetadataRepository
from services.runtime import db

pytestmark = pytest.mark.integration

GATE = 16_016  # advisory lock key of the gate


@pytest.fixture(scope="module")
async def pool(
    scratch_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(await scratch_database("metadata_race"), max_size=12)
    try:
        await db.migrate(pool, SCHEMA, MIGRATIONS)
        # Every insert waits at the gate (BEFORE ROW triggers run before the arbiter check).
        await pool.execute(f"""
            CREATE FUNCTION metadata.gate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock_shared({GATE}); RETURN NEW; END $$;
            CREATE TRIGGER gate BEFORE INSERT ON metadata.image_metadata
                FOR EACH ROW EXECUTE FUNCTION metadata.gate();""")
        yield pool
    finally:
        await pool.close()


def _metadata(sha: str) -> metadata_pb2.ImageMetadata:
    return metadata_pb2.ImageMetadata(
        sha256=sha, format=image_pb2.JPEG, width=64, height=48, mode="RGB", size_bytes=1234
    )


async def _race(pool: asyncpg.Pool, writers: int) -> tuple[str, list[BaseException | None]]:
    repo = MetadataRepository(pool)
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    async with pool.acquire() as gate:
        await gate.execute("SELECT pg_advisory_lock($1)", GATE)
        try:
            attempts = [
                asyncio.create_task(repo.upsert("t-race", _metadata(sha), f"img_{sha[:32]}"))
                for _ in range(writers)
            ]
            for _ in range(500):
                waiting = await gate.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND objid = $1 AND NOT granted",
                    GATE,
                )
                if waiting == writers:
                    break
                await asyncio.sleep(0.01)
            assert waiting == writers
        finally:
            await gate.execute("SELECT pg_advisory_unlock($1)", GATE)
        results = await asyncio.gather(*attempts, return_exceptions=True)
    return sha, list(results)


async def test_concurrent_indexing_of_one_image_ends_in_one_row(pool: asyncpg.Pool) -> None:
    for _ in range(5):
        sha, results = await _race(pool, writers=4)
        assert results == [None] * 4
        rows = await pool.fetch(
            "SELECT image_id FROM metadata.image_metadata WHERE tenant_id = 't-race'"
            " AND sha256 = $1",
            sha,
        )
        assert [r["image_id"] for r in rows] == [f"img_{sha[:32]}"]
