"""A real Postgres 18 for the job registry's repository tests: a database of their own on the
session's server (tests/conftest.py `scratch_database`), with the real migrations applied. Not
the services' database: a jobs service running there would relay the tests' outbox rows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import asyncpg
import pytest

from services.jobs.app import MIGRATIONS
from services.jobs.repository import JobsRepository
from services.jobs.service import JobsService
from services.runtime import db
from services.runtime.bus import Bus


@pytest.fixture(scope="session")
async def pool(
    scratch_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(await scratch_database("jobs_tests"), max_size=4)
    try:
        await db.migrate(pool, "jobs", MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> JobsRepository:
    return JobsRepository(pool, job_timeout_s=600)


@pytest.fixture
def service(repo: JobsRepository) -> JobsService:
    # Creating jobs and applying events never touch the bus (the outbox relay does).
    return JobsService(repo, cast(Bus, None), max_renditions=3)
