"""asyncpg pool and ordered SQL migrations, applied at start-up under an advisory lock.

Each service keeps `migrations/NNNN_name.sql` beside its code and owns one schema; applied
files are recorded in `<schema>.schema_migrations`, so running them again is a no-op and two
replicas starting together do not race (pg_advisory_xact_lock serialises them).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=30)
    assert pool is not None
    return pool


async def migrate(pool: asyncpg.Pool, schema: str, folder: Path) -> list[str]:
    """Apply the not-yet-applied `*.sql` files in `folder` in name order; return their names."""
    files = sorted(folder.glob("*.sql"))
    applied: list[str] = []
    lock_key = zlib.crc32(f"pixmesh-migrate-{schema}".encode())
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')
        }
        for path in files:
            if path.name in done:
                continue
            await conn.execute(path.read_text())
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations (name) VALUES ($1)', path.name
            )
            applied.append(path.name)
    if applied:
        log.info("applied migrations", extra={"schema": schema, "files": applied})
    return applied
