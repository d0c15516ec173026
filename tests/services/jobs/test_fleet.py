"""GetFleetStatus's reader against real servers: job counts in Postgres (the repository tests'
database), queues and dead letters in JetStream and replicas from presence on NATS.

Each test works on a service name of its own (consumers <name>-tasks / <name>-events, subjects
pixmesh.task.<name>, pixmesh.dlq.<name>), so the stack's services are never disturbed and
their traffic never reaches the numbers asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import asyncpg
import pytest
from nats.js.errors import NotFoundError

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs.fleet import FLEET_SERVICES, Fleet
from services.jobs.repository import _COUNTS, JobsRepository
from services.jobs.service import JobsService
from services.runtime import bus as busmod
from services.runtime import db
from services.runtime.bus import Bus
from services.runtime.presence import Announcer, PresenceBoard

pytestmark = pytest.mark.integration


def _presence(service: str, instance: str) -> events_pb2.Presence:
    p = events_pb2.Presence(service=service, instance=instance, grpc_address="10.1.2.3:50053")
    p.interval.FromNanoseconds(200_000_000)
    return p


def _image() -> image_pb2.Image:
    sha = uuid.uuid4().hex * 2
    return image_pb2.Image(image_id=f"img_{sha[:32]}", sha256=sha, format=image_pb2.JPEG)


_OPS = [operations_pb2.Operation(resize=operations_pb2.Resize(width=10))]


async def test_job_counts_over_the_window(
    repo: JobsRepository, service: JobsService, pool: asyncpg.Pool
) -> None:
    before = await repo.job_counts(60.0)
    jobs = [(await service.create_job("t-fleet", _image(), _OPS, "", "h"))[0] for _ in range(3)]
    await service.cancel_job("t-fleet", jobs[0].job_id)
    # A job already past its deadline fails when the reaper looks.
    hasty = JobsService(JobsRepository(pool, job_timeout_s=0.001), cast(Bus, None))
    await hasty.create_job("t-fleet", _image(), _OPS, "", "h")
    await asyncio.sleep(0.01)
    assert await hasty.expire_overdue() == 1
    after = await repo.job_counts(60.0)
    assert after.created - before.created == 4
    assert after.finished - before.finished == 2
    assert after.failed - before.failed == 1
    assert after.pending - before.pending == 2
    assert after.running == before.running
    # Nothing was created or finished in the last microsecond; open jobs do not depend on it.
    now = await repo.job_counts(1e-6)
    assert (now.created, now.finished, now.pending) == (0, 0, after.pending)


async def test_job_counts_can_use_indexes(pool: asyncpg.Pool) -> None:
    """Every arm of the count's OR has an index (migration 0005 and jobs_open_deadline), so a
    big jobs table is not read whole on each `pixmesh status --watch` refresh."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _COUNTS, 60.0))
    assert "Seq Scan" not in plan, plan
    for index in ("jobs_created", "jobs_finished", "jobs_open_deadline"):
        assert index in plan, plan


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "test-fleet")
    await b.ensure_streams()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def svc(bus: Bus) -> AsyncIterator[str]:
    name = f"fleettest{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        for stream, durable in (
            (busmod.TASKS_STREAM, f"{name}-tasks"),
            (busmod.EVENTS_STREAM, f"{name}-events"),
        ):
            with contextlib.suppress(NotFoundError):
                await bus.js.delete_consumer(stream, durable)
        await bus.js.purge_stream(busmod.TASKS_STREAM, subject=busmod.task_subject(name))
        await bus.js.purge_stream(busmod.EVENTS_STREAM, subject=f"pixmesh.event.{name}.>")
        await bus.js.purge_stream(busmod.DLQ_STREAM, subject=busmod.dlq_subject(name))


async def test_fleet_status_reads_queues_dead_letters_and_replicas(
    bus: Bus, svc: str, repo: JobsRepository
) -> None:
    board = PresenceBoard(bus.nc)
    await board.start()
    # Two replicas of `svc` announce themselves.
    stop = asyncio.Event()
    announcers = []
    for i in range(2):
        a = Announcer(bus.nc, _presence(svc, f"host-{i}"))
        announcers.append(asyncio.create_task(a.run(stop)))
    try:
        # Tasks: 3 queued, 1 of them taken and not acked.
        tasks = busmod.task_subject(svc)
        await bus.ensure_consumer(
            busmod.TASKS_STREAM,
            f"{svc}-tasks",
            tasks,
            ack_wait=30,
            max_deliver=3,
            max_ack_pending=10,
        )
        for i in range(3):
            await bus.js.publish(tasks, f"t{i}".encode())
        taken = await bus.js.pull_subscribe_bind(f"{svc}-tasks", busmod.TASKS_STREAM)
        assert len(await taken.fetch(1, timeout=2)) == 1
        # Events (a limits stream keeps acked messages): an old one acked, a new one pending.
        events = f"pixmesh.event.{svc}.x"
        await bus.ensure_consumer(
            busmod.EVENTS_STREAM,
            f"{svc}-events",
            events,
            ack_wait=30,
            max_deliver=3,
            max_ack_pending=10,
        )
        await bus.js.publish(events, b"old")
        ev = await bus.js.pull_subscribe_bind(f"{svc}-events", busmod.EVENTS_STREAM)
        for msg in await ev.fetch(1, timeout=2):
            await msg.ack_sync()
        await asyncio.sleep(1.0)
        await bus.js.publish(events, b"new")
        # Dead letters.
        for _ in range(2):
            await bus.js.publish(busmod.dlq_subject(svc), b"dead")
        await asyncio.sleep(0.2)

        status = await Fleet(repo, bus, board).status()
    finally:
        stop.set()
        await asyncio.gather(*announcers)
        await board.close()

    assert not status.warnings
    names = [s.service for s in status.services]
    assert tuple(names[:5]) == FLEET_SERVICES and svc in names[5:]
    mine = next(s for s in status.services if s.service == svc)
    assert mine.replicas == 2
    assert [i.instance for i in mine.instances] == ["host-0", "host-1"]
    assert mine.instances[0].grpc_address == "10.1.2.3:50053"
    assert mine.instances[0].last_seen.seconds > 0
    assert mine.dead_letters == 2
    queues = {q.consumer: q for q in mine.queues}
    t = queues[f"{svc}-tasks"]
    assert (t.stream, t.pending, t.ack_pending, t.redelivered) == (busmod.TASKS_STREAM, 2, 1, 0)
    assert 1.0 < t.oldest_age.ToNanoseconds() / 1e9 < 30
    e = queues[f"{svc}-events"]
    assert (e.stream, e.pending, e.ack_pending) == (busmod.EVENTS_STREAM, 1, 0)
    # The oldest not yet handled is the new one, not the acked message a second older.
    assert 0 <= e.oldest_age.ToNanoseconds() / 1e9 < 0.9
    assert status.jobs.window.seconds == 60
    assert status.time.seconds > 0


async def test_what_cannot_be_read_is_a_warning_not_a_failure(
    bus: Bus, svc: str, scratch_database: Callable[[str], Awaitable[str]]
) -> None:
    pool = await db.create_pool(await scratch_database("fleet_closed"), max_size=1)
    await pool.close()
    board = PresenceBoard(bus.nc)
    await bus.js.publish(busmod.dlq_subject(svc), b"dead")
    status = await Fleet(JobsRepository(pool, job_timeout_s=60), bus, board).status()
    assert [w.split(" unreadable")[0] for w in status.warnings] == ["Postgres: job counts"]
    assert not status.HasField("jobs")
    assert next(s for s in status.services if s.service == svc).dead_letters == 1
