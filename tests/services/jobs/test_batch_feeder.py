"""The batch feeder's pace against a real Postgres (tests/services/jobs/conftest.py): it is
woken by a batch created on its replica and by the job events its replica applies, and looks
again every `resync_s` while a batch runs (another replica's events), every `idle_s` when none
does (issue 10: the idle feeder no longer polls ten times a second; issue 12, seventh pass: nor
does one holding a batch)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, cast

import asyncpg
import pytest

from pixmesh.common.v1 import batch_pb2
from pixmesh.events.v1 import events_pb2
from pixmesh.jobs.v1 import batches_pb2
from services.jobs.batches import Backlog, Batches, BatchPolicy, Round
from services.jobs.connections import Bucket, ConnectionStore
from services.jobs.consumers import task_events_consumer
from services.jobs.service import JobsService
from services.jobs.settings import JobsSettings
from services.runtime.bus import Bus, Delivery
from services.runtime.secrets import SecretBox
from services.runtime.storage import Storage
from tests.services.jobs.test_repository import TENANT, failed, image, resize

pytestmark = pytest.mark.integration

T = TypeVar("T")
# A wait no test outlasts: the feeder acts only when woken.
NEVER_S = 3600.0


def images_batches(
    pool: asyncpg.Pool,
    service: JobsService,
    policy: BatchPolicy | None = None,
    backlog: Backlog | None = None,
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
        backlog,
        policy=policy or BatchPolicy(),
    )


async def eventually(read: Callable[[], Awaitable[T]], want: T, within_s: float = 30.0) -> bool:
    """Whether `read()` gives `want` within `within_s` (read every 20 ms)."""
    deadline = time.monotonic() + within_s
    while await read() != want:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def unsubmitted(pool: asyncpg.Pool, batch_id: str) -> int:
    found: int = await pool.fetchval(
        "SELECT count(*) FROM jobs.batch_items WHERE batch_id = $1 AND job_id IS NULL", batch_id
    )
    return found


async def item_states(pool: asyncpg.Pool, batch_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT state FROM jobs.batch_items WHERE batch_id = $1 ORDER BY idx", batch_id
    )
    return [r["state"] for r in rows]


async def batch_state(pool: asyncpg.Pool, batch_id: str) -> str:
    found: str = await pool.fetchval("SELECT state FROM jobs.batches WHERE batch_id = $1", batch_id)
    return found


async def job_ids(pool: asyncpg.Pool, batch_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT job_id FROM jobs.batch_items WHERE batch_id = $1 ORDER BY idx", batch_id
    )
    return [r["job_id"] for r in rows]


def ended(job_id: str) -> events_pb2.TaskEvent:
    """The event the jobs consumer hands the feeder once applied (its content is not read)."""
    return events_pb2.TaskEvent(job_id=job_id, completed=events_pb2.TaskCompleted())


async def two_images(batches: Batches) -> str:
    batch, created = await batches.create(
        batches_pb2.CreateBatchRequest(
            tenant_id=TENANT, images=[image(), image()], operations=[resize(10)]
        )
    )
    assert created
    return batch.batch_id


@contextlib.asynccontextmanager
async def feeding(*replicas: Batches) -> AsyncIterator[None]:
    """The replicas' feeders running; stopped (promptly: a feeder waiting out its resync_s or
    idle_s is woken by the stop) when the block ends."""
    stop = asyncio.Event()
    feeders = [asyncio.create_task(b.feed(stop)) for b in replicas]
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*feeders)


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
        # Polled (nothing signals a submission): 30 s, far short of idle_s.
        assert await eventually(lambda: unsubmitted(pool, batch.batch_id), 0)
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
        assert await batches._round() == Round(worked=True, held=True)
        submitted = await items()
        assert [s for s, _ in submitted] == ["SUBMITTED", "SUBMITTED"]
        # Both jobs wait: nothing to settle, nothing to submit.
        assert await batches._round() == Round(worked=False, held=True)
        assert await items() == submitted and await state() == "RUNNING"
        await service.cancel_job(TENANT, str(submitted[0][1]))
        # One ended, one still open: settled, the batch runs on.
        assert await batches._round() == Round(worked=True, held=True)
        assert [s for s, _ in await items()] == ["CANCELLED", "SUBMITTED"]
        assert await state() == "RUNNING"
        await service.cancel_job(TENANT, str(submitted[1][1]))
        assert await batches._round() == Round(worked=True, held=True)
        assert [s for s, _ in await items()] == ["CANCELLED", "CANCELLED"]
        assert await state() == "SUCCEEDED"
    finally:
        if await state() == "RUNNING":
            await batches.cancel(TENANT, batch.batch_id)


async def test_a_job_event_applied_here_wakes_the_feeder_holding_a_batch(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """A batch it holds is looked at again when a job event is applied on its replica, not
    every 0.1 s: a job that ended is settled once its event was applied, not before."""
    batches = images_batches(pool, service, BatchPolicy(resync_s=NEVER_S, idle_s=NEVER_S))
    async with feeding(batches):
        batch_id = await two_images(batches)
        assert await eventually(lambda: unsubmitted(pool, batch_id), 0)
        first, second = await job_ids(pool, batch_id)
        await service.cancel_job(TENANT, first)
        # Nothing woke it: the job ended, its item is not settled.
        await asyncio.sleep(0.5)
        assert await item_states(pool, batch_id) == ["SUBMITTED", "SUBMITTED"]
        batches.task_event(ended(first))
        assert await eventually(lambda: item_states(pool, batch_id), ["CANCELLED", "SUBMITTED"])
        await service.cancel_job(TENANT, second)
        batches.task_event(ended(second))
        assert await eventually(lambda: item_states(pool, batch_id), ["CANCELLED", "CANCELLED"])
        # The round that settled the last one ends the batch.
        assert await eventually(lambda: batch_state(pool, batch_id), "SUCCEEDED")


async def test_another_replicas_job_events_are_caught_by_the_resync(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """Two replicas feed one batch; the job events are applied by a third (its own feeder
    not running): neither feeder hears of them, and each looks every `resync_s`."""
    policy = BatchPolicy(resync_s=0.3, idle_s=NEVER_S)
    replicas = [images_batches(pool, service, policy) for _ in range(2)]
    async with feeding(*replicas):
        batch_id = await two_images(replicas[0])
        assert await eventually(lambda: unsubmitted(pool, batch_id), 0)
        for job_id in await job_ids(pool, batch_id):
            await service.cancel_job(TENANT, job_id)
        assert await eventually(
            lambda: item_states(pool, batch_id), ["CANCELLED", "CANCELLED"], within_s=5.0
        )


async def test_a_wake_up_finding_the_batch_held_elsewhere_looks_again_soon(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """Woken while another replica holds the batch (whose round may have read it before the
    job ended), the feeder looks again every `tick_s` until it holds it, not after
    `resync_s`."""
    batches = images_batches(
        pool, service, BatchPolicy(resync_s=NEVER_S, idle_s=NEVER_S, tick_s=0.05)
    )
    async with feeding(batches):
        batch_id = await two_images(batches)
        assert await eventually(lambda: unsubmitted(pool, batch_id), 0)
        first, _ = await job_ids(pool, batch_id)
        async with pool.acquire() as other, other.transaction():
            # Another replica's round: the batch row locked (its lease being taken).
            await other.execute(
                "SELECT 1 FROM jobs.batches WHERE batch_id = $1 FOR UPDATE", batch_id
            )
            await service.cancel_job(TENANT, first)
            batches.task_event(ended(first))
            await asyncio.sleep(0.3)
            assert await item_states(pool, batch_id) == ["SUBMITTED", "SUBMITTED"]
        # Released: a look `tick_s` later settles it.
        assert await eventually(
            lambda: item_states(pool, batch_id), ["CANCELLED", "SUBMITTED"], within_s=2.0
        )
    await batches.cancel(TENANT, batch_id)


async def test_the_lane_backlog_is_read_again_after_a_job_event_or_its_ttl(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """The lane's backlog (a JetStream consumer info) is read when there is room to submit,
    and kept, with the tasks submitted since, until a job event is applied here or
    `backlog_ttl_s` passed."""
    reads: list[str] = []
    waiting = 0

    async def backlog(worker_service: str) -> int:
        reads.append(worker_service)
        return waiting

    batches = images_batches(
        pool, service, BatchPolicy(lane_backlog=1, backlog_ttl_s=NEVER_S), backlog
    )
    batch, _ = await batches.create(
        batches_pb2.CreateBatchRequest(
            tenant_id=TENANT, images=[image(), image(), image()], operations=[resize(10)]
        )
    )
    try:
        # Read, one submitted: the lane holds one now (as counted here).
        assert (await batches._round()).worked and reads == ["imaging"]
        assert await unsubmitted(pool, batch.batch_id) == 2
        # Not read again: one submitted since the read fills the lane.
        assert not (await batches._round()).worked and reads == ["imaging"]
        # A job event here (a worker took the task): read again, room for one.
        batches.task_event(ended("job_x"))
        assert (await batches._round()).worked and reads == ["imaging"] * 2
        assert await unsubmitted(pool, batch.batch_id) == 1
        # With the TTL passed, read again; the lane full as read: nothing submitted.
        batches.policy = BatchPolicy(lane_backlog=1, backlog_ttl_s=0.0)
        waiting = 1
        assert not (await batches._round()).worked and reads == ["imaging"] * 3
        assert await unsubmitted(pool, batch.batch_id) == 1
    finally:
        await batches.cancel(TENANT, batch.batch_id)


async def test_watch_reads_the_batch_when_the_feeder_changed_it(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """WatchBatch reads the batch when this replica's feeder changed it (at most every
    `watch_s`, at once when it ended), not every second whatever happened."""
    batches = images_batches(
        pool,
        service,
        BatchPolicy(resync_s=NEVER_S, idle_s=NEVER_S, watch_s=0.2, watch_resync_s=NEVER_S),
    )
    reads = 0
    get = batches.get

    async def counted(tenant: str, batch_id: str) -> batch_pb2.Batch:
        nonlocal reads
        reads += 1
        return await get(tenant, batch_id)

    batches.get = counted  # type: ignore[method-assign]
    async with feeding(batches):
        batch_id = await two_images(batches)
        assert await eventually(lambda: unsubmitted(pool, batch_id), 0)
        stream = batches.watch(TENANT, batch_id)
        first = await anext(stream)
        assert first.progress.pending == 2
        reads = 0
        # Nothing changes: no read (a poll read it every second).
        await asyncio.sleep(1.2)
        assert reads == 0
        first_job, second_job = await job_ids(pool, batch_id)
        await service.cancel_job(TENANT, first_job)
        batches.task_event(ended(first_job))
        async with asyncio.timeout(5):
            changed = await anext(stream)
        assert changed.progress.cancelled == 1 and reads == 1
        await service.cancel_job(TENANT, second_job)
        batches.task_event(ended(second_job))
        async with asyncio.timeout(5):
            last = await anext(stream)
        assert last.state == last.SUCCEEDED and reads == 2
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    # The stream's bookkeeping is gone with it.
    assert not batches._watches


async def test_the_jobs_consumer_wakes_the_feeder_once_it_applied_an_event(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """The task-event consumer (services/jobs/consumers.py) tells the feeder of each event it
    applied: a batch job's failure is settled with its reason, and nothing else looks."""
    batches = images_batches(pool, service, BatchPolicy(resync_s=NEVER_S, idle_s=NEVER_S))
    consumer = task_events_consumer(cast(Bus, None), service, JobsSettings(), batches.task_event)
    async with feeding(batches):
        batch_id = await two_images(batches)
        assert await eventually(lambda: unsubmitted(pool, batch_id), 0)
        first, _ = await job_ids(pool, batch_id)
        event = failed(await service.get_job(TENANT, first), 0)
        await consumer.handler(
            Delivery("pixmesh.event.task.failed", event.SerializeToString(), {}, 1)
        )
        assert await eventually(lambda: item_states(pool, batch_id), ["FAILED", "SUBMITTED"])
        reason = await pool.fetchval(
            "SELECT error_reason FROM jobs.batch_items WHERE batch_id = $1 AND idx = 0", batch_id
        )
        assert reason == "IMAGE_CORRUPT"
    await batches.cancel(TENANT, batch_id)
