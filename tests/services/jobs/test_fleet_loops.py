"""The jobs service's once-per-fleet loops with two replicas, against a real Postgres
(tests/services/jobs/conftest.py): the outbox relay, the deadline sweep and webhook deliveries
each claim their rows, so nothing runs twice, and a replica that dies mid-claim leaves its rows to
the other one instead of stalling them (issue 8)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import asyncpg
import pytest

from pixmesh.common.v1 import job_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs.outbox import claim
from services.jobs.repository import JobsRepository
from services.jobs.service import JobsService
from services.runtime.bus import Bus
from tests.services.jobs.test_repository import TENANT, image, job_events, outbox, resize
from tests.services.jobs.test_webhooks_repository import claim_mine, create

pytestmark = pytest.mark.integration


async def _mine(conn: asyncpg.Connection, job_id: str) -> list[str]:
    return [m.msg_id for m in await claim(conn, 10_000) if m.msg_id.startswith(job_id)]


async def test_a_relay_that_dies_mid_claim_leaves_its_rows_to_the_other_replica(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    dying = await pool.acquire()
    try:
        tx = dying.transaction()
        await tx.start()
        claimed = await _mine(dying, job.job_id)
        assert claimed
        # The other replica skips what is claimed...
        async with pool.acquire() as other, other.transaction():
            assert await _mine(other, job.job_id) == []
        # ...until the claimer's process dies (its session ends without a commit).
        pid = dying.get_server_pid()
        async with pool.acquire() as admin:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        # The pool finds the connection dead and replaces it. Whether the client has seen the
        # server end the session yet is a race: releasing then fails in one of these ways.
        with contextlib.suppress(
            asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError
        ):
            await pool.release(dying)
    async with pool.acquire() as other, other.transaction():
        assert await _mine(other, job.job_id) == claimed
    assert await outbox(pool, job.job_id) == []


async def test_two_replicas_sweeping_deadlines_at_once_fail_each_job_once(
    pool: asyncpg.Pool,
) -> None:
    replicas = [
        JobsService(JobsRepository(pool, job_timeout_s=600), cast(Bus, None)) for _ in range(2)
    ]
    jobs = [
        (await replicas[0].create_job(TENANT, image(), [resize(10)], "", "h"))[0] for _ in range(30)
    ]
    await pool.execute(
        "UPDATE jobs.jobs SET deadline = now() - interval '1 second' WHERE job_id = ANY($1)",
        [j.job_id for j in jobs],
    )
    await asyncio.gather(*(r.expire_overdue() for r in replicas))
    for job in jobs:
        states = [e.job.state for e in await job_events(pool, job.job_id)]
        # Failed exactly once (the creation announces nothing).
        assert states == [job_pb2.Job.FAILED]
        got = await replicas[1].get_job(TENANT, job.job_id)
        assert got.error.reason == "DEADLINE_EXCEEDED"


async def test_a_webhook_claimed_by_a_replica_that_died_is_taken_after_its_lease(
    repo: JobsRepository,
    service: JobsService,
) -> None:
    job = await create(service)
    await service.apply_event(
        events_pb2.TaskEvent(
            event_id=f"{job.job_id}.0.failed",
            task_id=f"{job.job_id}.0",
            job_id=job.job_id,
            stage_index=0,
            failed=events_pb2.TaskFailed(attempts=1),
        )
    )
    # One replica claims it for 0.5 s and never records an attempt (it was SIGKILLed).
    assert await claim_mine(service, {job.job_id}, lease_s=0.5) == [job.job_id]
    other = JobsService(JobsRepository(repo.pool, job_timeout_s=600), cast(Bus, None))
    assert await claim_mine(other, {job.job_id}) == []
    await asyncio.sleep(0.7)
    assert await claim_mine(other, {job.job_id}) == [job.job_id]
