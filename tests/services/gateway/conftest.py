"""Fixtures of the gateway's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from services.gateway.app import MIGRATIONS
from services.runtime import db
from tests.services.gateway.fakes import Clock


@pytest.fixture
async def gateway_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the session stack's Postgres, the gateway's schema migrated."""
    pool = await db.create_pool(database_url, max_size=2)
    try:
        await db.migrate(pool, "gateway", MIGRATIONS)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()
