"""Fixtures shared by the imaging tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.imaging.isolation import IsolationConfig, ProcessPool


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[ProcessPool]:
    """One isolated child, as the service runs pipelines (modules that need another shape of
    pool, e.g. a memory limit, define their own `pool`)."""
    p = ProcessPool(IsolationConfig(workers=1, memory_limit_bytes=None, max_pixels=50_000_000))
    await p.start()
    yield p
    p.close()
