"""The transactional outbox: the messages of a change (tasks, job events), written in the same
statement as the rows they announce (the repository's SQL embeds `OUTBOX_CTE`), and the relay
that publishes them to JetStream in order, woken by the NOTIFY that statement sends.

No dual writes: a message exists if and only if its change committed; JetStream dedups a
message published twice (`Nats-Msg-Id` = its id), so the relay is at-least-once and safe.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field

import asyncpg
from google.protobuf.message import Message
from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh.common.v1 import job_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import mapping
from services.jobs import statemachine as sm
from services.runtime import bus as busmod
from services.runtime import db, metrics
from services.runtime.bus import Bus
from services.runtime.telemetry import inject_headers

OUTBOX_CHANNEL = "jobs_outbox"
# Outbox rows claimed (and published, in order) per relay transaction.
RELAY_BATCH = 100

# The outbox rows of one change, in order (ids follow ORDINALITY), then the relay's wake-up
# (delivered at commit, like NOTIFY). `{headers}`: the JSON headers parameter; `{source}` a
# FROM item joined in (with its comma) or ""; `{arrays}` the subject, msg id, payload arrays.
OUTBOX_CTE = (
    """outbox AS (
        INSERT INTO jobs.outbox (subject, msg_id, payload, headers)
        SELECT m.subject, m.msg_id, m.payload, {headers}::jsonb
        FROM {source} unnest({arrays}) WITH ORDINALITY AS m(subject, msg_id, payload, n)
        ORDER BY m.n)
    SELECT pg_notify('"""
    + OUTBOX_CHANNEL
    + "', '')"
)


@dataclass
class Outbox:
    """Messages written with a change, in publishing order."""

    subjects: list[str] = field(default_factory=list)
    msg_ids: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    # The id of the last JobStateChanged added (a webhook's event id when the job ended).
    job_event_id: str | None = None

    def add(self, subject: str, msg_id: str, msg: Message) -> None:
        self.subjects.append(subject)
        self.msg_ids.append(msg_id)
        self.payloads.append(msg.SerializeToString())

    def task(self, job: sm.JobRecord, idx: int, suffix: str = "") -> None:
        task = mapping.task(job, idx, suffix)
        self.add(busmod.task_subject(task.service, mapping.lane(job)), task.task_id, task)

    def job_event(self, job: sm.JobRecord) -> job_pb2.Job:
        """Announce the job as it is now; returns the API's view of it (the event's)."""
        event_id = f"{job.job_id}.{uuid.uuid4().hex[:12]}"
        msg = events_pb2.JobStateChanged(event_id=event_id, tenant_id=job.tenant_id)
        mapping.job_proto(job, msg.job)
        self.add(busmod.job_event_subject(job.job_id), event_id, msg)
        self.job_event_id = event_id
        return msg.job

    def params(self) -> tuple[list[str], list[str], list[bytes], str]:
        """The parameters of `OUTBOX_CTE`: its arrays, then the stored headers (JSON): the
        trace context of the request that caused the messages travels with them."""
        headers = json.dumps(dict(inject_headers({})))
        return self.subjects, self.msg_ids, self.payloads, headers


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str]


async def claim(conn: asyncpg.Connection, limit: int = RELAY_BATCH) -> list[OutboxMessage]:
    """The oldest unpublished messages, in order, locked and deleted in one statement.
    Call it in a transaction and commit only once JetStream acked them all: a rollback
    leaves them in place (and unlocked) for the next claim. A published row has no reader
    (JetStream dedups by msg id), so it is not kept: the table holds the backlog only."""
    rows = await conn.fetch(
        """DELETE FROM jobs.outbox o
           USING (SELECT id FROM jobs.outbox WHERE published_at IS NULL
                  ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) claimed
           WHERE o.id = claimed.id
           RETURNING o.id, o.subject, o.msg_id, o.payload, o.headers""",
        limit,
    )
    return sorted(
        (
            OutboxMessage(
                r["id"], r["subject"], r["msg_id"], bytes(r["payload"]), json.loads(r["headers"])
            )
            for r in rows
        ),
        key=lambda m: m.id,
    )


class OutboxRelay:
    """Publishes outbox rows in order; every replica runs it (claims are SKIP LOCKED)."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus) -> None:
        self.pool = pool
        self.bus = bus

    async def run(self, stop: asyncio.Event) -> None:
        """Woken by NOTIFY, with a 1 s poll as the safety net."""

        async def batch() -> bool:
            # Not traced: the idle polling would be a one-span trace every second, and each
            # message carries the trace context of the change that wrote it.
            with suppress_instrumentation():
                return await self.relay_once() >= RELAY_BATCH

        await db.run_when_notified(self.pool, OUTBOX_CHANNEL, stop, batch, what="outbox relay")

    async def relay_once(self) -> int:
        """Claim and publish one batch; how many messages it held."""
        n = await self._publish_batch()
        if n:  # committed: the published rows are gone (pixmesh_retention_removed_total)
            metrics.RETENTION_REMOVED("outbox").inc(n)
        return n

    async def _publish_batch(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            # Deleted now, for good only when the transaction commits after them all.
            batch = await claim(conn, RELAY_BATCH)
            for m in batch:
                # No span of the relay's own: a message travels in the trace context of the
                # change that wrote it, so a task's consumer span is the child of that request's
                # span (the time between the two is the commit, the relay and the queue). A
                # span per task here cost its start, its export and the sink's share, on every
                # stage of every job, for one publish.
                await self.bus.publish_raw(
                    m.subject, m.payload, msg_id=m.msg_id, headers=m.headers, inject_trace=False
                )
            return len(batch)
