"""Retention of the job registry's tables (issue 16), against a real Postgres
(tests/services/jobs/conftest.py) and, for the relay, the session's NATS: published outbox rows
go with the commit that follows JetStream's acks and unpublished ones stay; processed-event ids
go once past the redelivery horizon, and only those."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import cast

import asyncpg
import nats.js.errors
import pytest
from prometheus_client import REGISTRY

from services.jobs.outbox import OutboxRelay
from services.jobs.repository import JobsRepository
from services.jobs.service import JobsService
from services.jobs.settings import PROCESSED_EVENTS_MARGIN_S, JobsSettings
from services.runtime import bus as busmod
from services.runtime import metrics
from services.runtime.bus import Bus, EventRetention, redelivery_horizon_s
from tests.services.jobs.test_repository import TENANT, image, outbox, resize, started

pytestmark = pytest.mark.integration

HORIZON_S = JobsSettings().processed_events_horizon_s


async def _processed(pool: asyncpg.Pool, prefix: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT event_id FROM jobs.processed_events WHERE starts_with(event_id, $1)", prefix
    )
    return {r["event_id"] for r in rows}


def _removed(store: str) -> float:
    """This process's pixmesh_retention_removed_total for one store."""
    labels = {"service": metrics.service(), "store": store}
    return REGISTRY.get_sample_value("pixmesh_retention_removed_total", labels) or 0.0


async def _age(pool: asyncpg.Pool, event_ids: list[str], seconds: float) -> None:
    await pool.execute(
        "UPDATE jobs.processed_events SET processed_at = now() - make_interval(secs => $2)"
        " WHERE event_id = ANY($1)",
        event_ids,
        seconds,
    )


async def test_processed_events_past_the_horizon_go_and_recent_ones_still_dedup(
    repo: JobsRepository, service: JobsService, pool: asyncpg.Pool
) -> None:
    old_job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    new_job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    await service.apply_event(started(old_job, 0))
    await service.apply_event(started(new_job, 0))
    old_id, new_id = f"{old_job.job_id}.0.started.1", f"{new_job.job_id}.0.started.1"
    await _age(pool, [old_id], HORIZON_S + 5)
    # Just inside the horizon: a duplicate of it could still arrive.
    await _age(pool, [new_id], HORIZON_S - 60)

    assert await repo.trim_processed_events(HORIZON_S) >= 1
    assert await _processed(pool, old_job.job_id) == set()
    assert await _processed(pool, new_job.job_id) == {new_id}
    # The kept id still makes its duplicate a no-op: no second JobStateChanged.
    written = len(await outbox(pool, new_job.job_id))
    await service.apply_event(started(new_job, 0))
    assert len(await outbox(pool, new_job.job_id)) == written


async def test_two_replicas_trimming_at_once_delete_each_row_once(
    repo: JobsRepository, pool: asyncpg.Pool
) -> None:
    prefix = f"trim-{uuid.uuid4().hex[:8]}"
    due = [f"{prefix}.{i}" for i in range(300)]
    kept = [f"{prefix}.kept.{i}" for i in range(20)]
    await pool.executemany(
        "INSERT INTO jobs.processed_events (event_id) VALUES ($1)", [(e,) for e in due + kept]
    )
    await _age(pool, due, HORIZON_S + 1)
    replicas = [JobsRepository(pool, job_timeout_s=600) for _ in range(2)]

    async def trim(r: JobsRepository) -> int:
        total = 0
        while n := await r.trim_processed_events(HORIZON_S, batch=25):
            total += n
        return total

    counts = await asyncio.gather(*(trim(r) for r in replicas))
    assert sum(counts) >= len(due)
    assert await _processed(pool, prefix) == set(kept)


def test_the_horizon_is_derived_from_the_consumer_settings() -> None:
    s = JobsSettings(ack_wait_s=30, max_deliver=5, job_timeout_s=60)
    # 6 deliveries of 30 s, naks of 1 + 5 + 15 + 60 s between the 5 tries.
    assert redelivery_horizon_s(30, 5) == 6 * 30 + 81
    assert s.processed_events_horizon_s == 261 + PROCESSED_EVENTS_MARGIN_S
    # An open job outlives the redeliveries: it sets the floor.
    assert JobsSettings(job_timeout_s=3000).processed_events_floor_s == 3000
    assert JobsSettings(processed_events_retention_s=7200).processed_events_horizon_s == 7200
    with pytest.raises(ValueError, match="redelivery horizon"):
        JobsSettings(processed_events_retention_s=100)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "test-jobs-retention", events=EventRetention(job_event_ttl_s=1))
    try:
        await b.ensure_streams()
        yield b
    finally:
        await b.close()


async def test_the_relay_deletes_what_it_published_and_job_events_expire(
    repo: JobsRepository, pool: asyncpg.Pool, bus: Bus
) -> None:
    # This database's rows only (earlier tests leave some); no task goes to the shared stream.
    await pool.execute("DELETE FROM jobs.outbox")
    service = JobsService(repo, bus)
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    # Its first change writes its first job event (the creation announces nothing).
    await service.apply_event(started(job, 0))
    await pool.execute("DELETE FROM jobs.outbox WHERE subject LIKE 'pixmesh.task.%'")
    other = f"pixmesh.event.retention-test.{uuid.uuid4().hex[:8]}"
    await pool.execute(
        "INSERT INTO jobs.outbox (subject, msg_id, payload) VALUES ($1, $2, 'x')",
        other,
        f"{other}.1",
    )
    relay = OutboxRelay(pool, bus)

    # A publish that fails (here: no stream takes the subject) rolls the claim back: the rows
    # stay, none is lost.
    await pool.execute(
        "INSERT INTO jobs.outbox (subject, msg_id, payload) VALUES ('nowhere.x', 'n1', '')"
    )
    removed = _removed("outbox")
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await relay.relay_once()
    assert len(await outbox(pool, job.job_id)) == 1
    assert _removed("outbox") == removed  # nothing removed, nothing counted
    await pool.execute("DELETE FROM jobs.outbox WHERE subject = 'nowhere.x'")

    assert await relay.relay_once() == 2
    assert _removed("outbox") == removed + 2
    assert await outbox(pool, job.job_id) == []
    assert await pool.fetchval("SELECT count(*) FROM jobs.outbox") == 0

    subject = busmod.job_event_subject(job.job_id)
    stored = await bus.js.get_msg(busmod.EVENTS_STREAM, subject=subject, next=True, seq=1)
    assert stored.headers is not None and stored.headers.get("Nats-TTL") == "1"
    untimed = await bus.js.get_msg(busmod.EVENTS_STREAM, subject=other, next=True, seq=1)
    assert "Nats-TTL" not in (untimed.headers or {})

    async def held(subj: str) -> int:
        info = await bus.js.stream_info(busmod.EVENTS_STREAM, subjects_filter=subj)
        return int((info.state.subjects or {}).get(subj, 0))

    # The job event (and its per-job subject) goes after its TTL; other events stay.
    for _ in range(100):
        if not await held(subject):
            break
        await asyncio.sleep(0.1)
    assert await held(subject) == 0
    assert await held(other) == 1


async def test_the_trim_loop_deletes_what_is_due_until_stopped(
    repo: JobsRepository, pool: asyncpg.Pool
) -> None:
    prefix = f"loop-{uuid.uuid4().hex[:8]}"
    await pool.executemany(
        "INSERT INTO jobs.processed_events (event_id) VALUES ($1)",
        [(f"{prefix}.old",), (f"{prefix}.new",)],
    )
    await _age(pool, [f"{prefix}.old"], HORIZON_S + 1)
    due = await pool.fetchval(
        "SELECT count(*) FROM jobs.processed_events"
        " WHERE processed_at < now() - make_interval(secs => $1)",
        HORIZON_S,
    )
    removed = _removed("processed_events")
    stop = asyncio.Event()
    loop = asyncio.create_task(
        JobsService(repo, cast(Bus, None)).trim_retention(
            stop, interval_s=0.05, processed_events_s=HORIZON_S
        )
    )
    try:
        for _ in range(100):
            if await _processed(pool, prefix) == {f"{prefix}.new"}:
                break
            await asyncio.sleep(0.05)
        assert await _processed(pool, prefix) == {f"{prefix}.new"}
        # Counted once each, as removed (the loop's later rounds find nothing due).
        await asyncio.sleep(0.2)
        assert _removed("processed_events") == removed + due
    finally:
        stop.set()
        await asyncio.wait_for(loop, 5)
