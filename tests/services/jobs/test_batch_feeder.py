"""The batch feeder's pace against a real Postgres (tests/services/jobs/conftest.py): it looks
again every `tick_s` while it holds a batch, every `idle_s` when it holds none, and a batch
created on its replica wakes it at once (issue 10: the idle feeder no longer polls ten times a
second)."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg
import pytest

from pixmesh.jobs.v1 import batches_pb2
from services.jobs.batches import Batches, BatchPolicy
from services.jobs.connections import Bucket, ConnectionStore
from services.jobs.service import JobsService
from services.runtime.secrets import SecretBox
from services.runtime.storage import Storage
from tests.services.jobs.test_repository import TENANT, image, resize

pytestmark = pytest.mark.integration


def images_batches(
    pool: asyncpg.Pool, service: JobsService, policy: BatchPolicy | None = None
) -> Batches:
    """Batches over image ids only: they read no storage, so the platform's bucket, storage
    and connections are never touched."""
    store = ConnectionStore(pool, SecretBox(()))
    return Batches(
        pool,
        service,
        cast(Storage, None),
        cast(Bucket, None),
        store,
        policy=policy or BatchPolicy(),
    )


async def test_a_batch_created_here_wakes_the_idle_feeder(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    # Idle, the feeder would not look again within the test: only the wake-up can feed it.
    batches = images_batches(pool, service, BatchPolicy(idle_s=3600.0))
    stop = asyncio.Event()
    feeder = asyncio.create_task(batches.feed(stop))
    try:
        # Its first rounds find nothing to hold (other tests' batches ended): it goes idle.
        await asyncio.sleep(0.3)
        assert not feeder.done()
        batch, created = await batches.create(
            batches_pb2.CreateBatchRequest(
                tenant_id=TENANT, images=[image(), image()], operations=[resize(10)]
            )
        )
        assert created
        # Polled (nothing signals a submission): 30 s is far past `tick_s`, far short of idle_s.
        for _ in range(600):
            unsubmitted = await pool.fetchval(
                "SELECT count(*) FROM jobs.batch_items WHERE batch_id = $1 AND job_id IS NULL",
                batch.batch_id,
            )
            if not unsubmitted:
                break
            await asyncio.sleep(0.05)
        assert unsubmitted == 0
    finally:
        stop.set()
        # Stopping wakes it too: it ends without waiting out `idle_s`.
        async with asyncio.timeout(10):
            await feeder
    await batches.cancel(TENANT, batch.batch_id)


async def test_a_round_submits_waits_then_settles_and_ends_the_batch(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """A feeder round reads a batch's items once, with its lease: it submits what is queued,
    leaves a batch whose jobs run as it is, and settles the jobs that ended and ends the batch
    in the same round when nothing is left."""
    batches = images_batches(pool, service)
    batch, _ = await batches.create(
        batches_pb2.CreateBatchRequest(
            tenant_id=TENANT, images=[image(), image()], operations=[resize(10)]
        )
    )

    async def items() -> list[tuple[str, str | None]]:
        rows = await pool.fetch(
            "SELECT state, job_id FROM jobs.batch_items WHERE batch_id = $1 ORDER BY idx",
            batch.batch_id,
        )
        return [(r["state"], r["job_id"]) for r in rows]

    async def state() -> str:
        found: str = await pool.fetchval(
            "SELECT state FROM jobs.batches WHERE batch_id = $1", batch.batch_id
        )
        return found

    try:
        assert await batches._round() == (True, True)
        submitted = await items()
        assert [s for s, _ in submitted] == ["SUBMITTED", "SUBMITTED"]
        # Both jobs wait: nothing to settle, nothing to submit.
        assert await batches._round() == (False, True)
        assert await items() == submitted and await state() == "RUNNING"
        await service.cancel_job(TENANT, str(submitted[0][1]))
        # One ended, one still open: settled, the batch runs on.
        assert await batches._round() == (True, True)
        assert [s for s, _ in await items()] == ["CANCELLED", "SUBMITTED"]
        assert await state() == "RUNNING"
        await service.cancel_job(TENANT, str(submitted[1][1]))
        assert await batches._round() == (True, True)
        assert [s for s, _ in await items()] == ["CANCELLED", "CANCELLED"]
        assert await state() == "SUCCEEDED"
    finally:
        if await state() == "RUNNING":
            await batches.cancel(TENANT, batch.batch_id)
