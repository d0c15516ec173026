"""Postgres access for the job registry. Every state change and the messages that announce it
(tasks, job events) are written in ONE transaction; the outbox relay publishes them.

Round trips are the cost that matters here (each is also a span): a change reads the job and
its stages in one statement (the job row locked; for a worker event, the event id recorded in
the same statement), applies a rule of `statemachine` in memory, and writes the changed rows,
the outbox messages and the relay's NOTIFY in a second statement. The JobStateChanged it
publishes is built from the same records, not read back. BEGIN and the pool's reset of a
connection on release are round trips that say nothing about a job: they are not traced.
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.message import Message
from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import errors
from services.jobs import statemachine as sm
from services.runtime import bus, metrics
from services.runtime.pipeline import plan_stages
from services.runtime.secrets import SecretBox
from services.runtime.storage import input_key
from services.runtime.telemetry import inject_headers

OUTBOX_CHANNEL = "jobs_outbox"
# NOTIFYed when a job with a webhook ends: its delivery is due.
WEBHOOK_CHANNEL = "jobs_webhooks"

_JOB_STATES = {name: job_pb2.Job.State.Value(name) for name in sm.TERMINAL | {"PENDING", "RUNNING"}}
_STAGE_STATES = {
    name: job_pb2.Stage.State.Value(name) for name in sm.TERMINAL | {"PENDING", "RUNNING"}
}

# A job row joined with its stages, one result row per stage, in stage order.
_JOB_COLUMNS = """
    j.job_id, j.tenant_id, j.image_id, j.state, j.operations, j.source, j.idempotency_key,
    j.request_hash, j.metadata, j.renditions, j.error_code, j.error_reason, j.error_message,
    j.deadline, j.created_at, j.updated_at, j.finished_at, j.recompute,
    s.idx, s.service, s.state AS s_state, s.operations AS s_operations, s.attempts, s.input_key,
    s.output_key, s.output, s.reports, s.renditions AS s_renditions, s.rendition_outputs,
    s.error_code AS s_error_code, s.error_reason AS s_error_reason,
    s.error_message AS s_error_message, s.started_at, s.finished_at AS s_finished_at,
    w.url AS w_url, w.state AS w_state, w.attempts AS w_attempts, w.last_error AS w_last_error,
    w.delivered_at AS w_delivered_at"""
_JOIN_STAGES = """JOIN jobs.stages s ON s.job_id = j.job_id
    LEFT JOIN jobs.webhook_deliveries w ON w.job_id = j.job_id"""

_GET = f"""SELECT {_JOB_COLUMNS} FROM jobs.jobs j {_JOIN_STAGES}
    WHERE j.job_id = $1 AND j.tenant_id = $2 ORDER BY s.idx"""

_BY_KEY = f"""SELECT {_JOB_COLUMNS} FROM jobs.jobs j {_JOIN_STAGES}
    WHERE j.tenant_id = $1 AND j.idempotency_key = $2 ORDER BY s.idx"""

# Locks the job row and its stages; `now` (the transaction's timestamp) dates everything the
# change sets. The stages are locked too so that a transaction that waited for the lock (another
# event of the same job, on this replica or another) reads the rows the first one wrote: Postgres
# re-reads the latest version of the rows it locks only, and the change writes all of them back.
_LOCK = f"""SELECT {_JOB_COLUMNS}, now() AS now FROM jobs.jobs j {_JOIN_STAGES}
    WHERE j.job_id = $1 {{}} ORDER BY s.idx FOR UPDATE OF j, s"""

# A worker event: recorded as processed (a duplicate finds it there and reads nothing) and the
# job locked, in one statement.
_LOCK_FOR_EVENT = f"""WITH fresh AS (
        INSERT INTO jobs.processed_events (event_id) VALUES ($2)
        ON CONFLICT DO NOTHING RETURNING event_id)
    {_LOCK.format("AND EXISTS (SELECT FROM fresh)")}"""

_LOCK_OVERDUE = f"""WITH due AS (
        SELECT job_id FROM jobs.jobs
        WHERE state IN ('PENDING','RUNNING') AND deadline < now()
        ORDER BY deadline LIMIT 100 FOR UPDATE SKIP LOCKED)
    SELECT {_JOB_COLUMNS}, now() AS now FROM due JOIN jobs.jobs j ON j.job_id = due.job_id
    {_JOIN_STAGES} ORDER BY j.deadline, j.job_id, s.idx"""

# The outbox rows of one change, in order (ids follow ORDINALITY), then the relay's wake-up
# (delivered at commit, like NOTIFY).
_OUTBOX_CTE = (
    """outbox AS (
        INSERT INTO jobs.outbox (subject, msg_id, payload, headers)
        SELECT m.subject, m.msg_id, m.payload, {headers}::jsonb
        FROM {source} unnest({arrays}) WITH ORDINALITY AS m(subject, msg_id, payload, n)
        ORDER BY m.n)
    SELECT pg_notify('"""
    + OUTBOX_CHANNEL
    + "', '')"
)

_CREATE = """WITH job AS (
        INSERT INTO jobs.jobs (job_id, tenant_id, image_id, state, operations, source,
            idempotency_key, request_hash, deadline, created_at, updated_at, renditions,
            recompute)
        VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9, $9, $10, $22)
        RETURNING job_id
    ), stages AS (
        INSERT INTO jobs.stages (job_id, idx, service, operations, state, input_key, renditions)
        SELECT job.job_id, v.idx, v.service, v.operations, 'PENDING', v.input_key, v.renditions
        FROM job, unnest($11::int[], $12::text[], $13::bytea[], $14::text[], $15::bytea[])
            AS v(idx, service, operations, input_key, renditions)
    ), webhook AS (
        INSERT INTO jobs.webhook_deliveries (job_id, url, secret)
        SELECT job.job_id, $20, $21 FROM job WHERE $20::text IS NOT NULL
    ), """ + _OUTBOX_CTE.format(
    headers="$19", source="job,", arrays="$16::text[], $17::text[], $18::bytea[]"
)

# Writes back what a transition changed: the job row, the changed stages, the messages. A job
# that ends makes its webhook's delivery due (a replayed job that ends again delivers again), and
# wakes the delivery loop; for other changes the webhook update is a no-op on a constant-false
# condition.
_SAVE = (
    """WITH job AS (
        UPDATE jobs.jobs SET state = $2, metadata = $3, error_code = $4, error_reason = $5,
            error_message = $6, deadline = $7, updated_at = $8, finished_at = $9
        WHERE job_id = $1
    ), stages AS (
        UPDATE jobs.stages AS s SET state = v.state, attempts = v.attempts,
            input_key = v.input_key, output_key = v.output_key, output = v.output,
            reports = v.reports, rendition_outputs = v.rendition_outputs,
            error_code = v.error_code, error_reason = v.error_reason,
            error_message = v.error_message, started_at = v.started_at,
            finished_at = v.finished_at
        FROM unnest($10::int[], $11::text[], $12::int[], $13::text[], $14::text[], $15::bytea[],
                    $16::bytea[], $17::bytea[], $18::text[], $19::text[], $20::text[],
                    $21::timestamptz[], $22::timestamptz[])
            AS v(idx, state, attempts, input_key, output_key, output, reports, rendition_outputs,
                 error_code, error_reason, error_message, started_at, finished_at)
        WHERE s.job_id = $1 AND s.idx = v.idx
    ), webhook AS (
        UPDATE jobs.webhook_deliveries SET state = 'PENDING', attempts = 0, last_error = NULL,
            delivered_at = NULL, event_id = $27, next_attempt_at = $8
        WHERE job_id = $1 AND $2 IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
        RETURNING job_id
    ), """
    + _OUTBOX_CTE.format(headers="$26", source="", arrays="$23::text[], $24::text[], $25::bytea[]")
    + ", (SELECT pg_notify('"
    + WEBHOOK_CHANNEL
    + "', '') FROM webhook)"
)


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class WebhookDelivery:
    """A claimed delivery attempt: `attempt` is its number (1-based), already counted."""

    job_id: str
    tenant_id: str
    url: str
    secret: str | None
    event_id: str
    attempt: int


# Claims due deliveries: locked (skipping rows another replica holds), their attempt counted and
# leased by moving next_attempt_at past the attempt's timeout, in one statement. A replica that
# dies mid-attempt leaves the row due again once the lease ends.
_CLAIM_WEBHOOKS = """UPDATE jobs.webhook_deliveries d
    SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
    FROM (SELECT job_id FROM jobs.webhook_deliveries
          WHERE state = 'PENDING' AND next_attempt_at <= now()
          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due, jobs.jobs j
    WHERE d.job_id = due.job_id AND j.job_id = d.job_id
    RETURNING d.job_id, j.tenant_id, d.url, d.secret, d.event_id, d.attempts"""

# An attempt's outcome: $3 NULL is a 2xx (DELIVERED); else the error, retried in $4 seconds, or
# FAILED when $4 is NULL. Only the attempt that holds the claim writes (a re-run job that ended
# again restarted the count).
_RECORD_WEBHOOK = """UPDATE jobs.webhook_deliveries SET
        state = CASE WHEN $3::text IS NULL THEN 'DELIVERED'
                     WHEN $4::float8 IS NULL THEN 'FAILED' ELSE 'PENDING' END,
        last_error = $3,
        delivered_at = CASE WHEN $3::text IS NULL THEN now() END,
        next_attempt_at = CASE WHEN $3::text IS NOT NULL AND $4::float8 IS NOT NULL
                               THEN now() + make_interval(secs => $4) END
    WHERE job_id = $1 AND attempts = $2 AND state = 'PENDING'
    RETURNING state"""


@dataclass
class _Outbox:
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
        task = _task(job, idx, suffix)
        self.add(bus.task_subject(task.service), task.task_id, task)

    def job_event(self, job: sm.JobRecord) -> job_pb2.Job:
        event_id = f"{job.job_id}.{uuid.uuid4().hex[:12]}"
        msg = events_pb2.JobStateChanged(event_id=event_id, tenant_id=job.tenant_id)
        _job_proto(job, msg.job)
        self.add(bus.job_event_subject(job.job_id), event_id, msg)
        self.job_event_id = event_id
        return msg.job


def _ops_blob(ops: Sequence[operations_pb2.Operation]) -> bytes:
    return job_pb2.Job(operations=ops).SerializeToString()


def _headers() -> str:
    # The trace context of the request that caused the messages travels with them.
    return json.dumps(dict(inject_headers({})))


@dataclass(frozen=True)
class JobCounts:
    created: int
    finished: int
    failed: int
    running: int
    pending: int
    # Seconds from created to finished of the jobs finished in the window; None when none did.
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None


_COUNTS = """
    SELECT count(*) FILTER (WHERE created_at > since) AS created,
           count(*) FILTER (WHERE finished_at > since) AS finished,
           count(*) FILTER (WHERE finished_at > since AND state = 'FAILED') AS failed,
           count(*) FILTER (WHERE state = 'RUNNING') AS running,
           count(*) FILTER (WHERE state = 'PENDING') AS pending,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP
               (ORDER BY extract(epoch FROM finished_at - created_at))
               FILTER (WHERE finished_at > since) AS latency
    FROM jobs.jobs, (SELECT now() - make_interval(secs => $1) AS since) w
    WHERE created_at > since OR finished_at > since OR state IN ('PENDING', 'RUNNING')"""


# Processed-event ids past the redelivery horizon: no duplicate of theirs can arrive any more.
_TRIM_PROCESSED = """DELETE FROM jobs.processed_events p
    USING (SELECT event_id FROM jobs.processed_events
           WHERE processed_at < now() - make_interval(secs => $1)
           ORDER BY processed_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
    WHERE p.event_id = due.event_id"""


class JobsRepository:
    def __init__(
        self, pool: asyncpg.Pool, *, job_timeout_s: float, secrets: SecretBox | None = None
    ) -> None:
        # Seals webhook secrets at rest (services/runtime/secrets.py); None: stored as given.
        self.secrets = secrets or SecretBox(())
        self.pool = pool
        self.job_timeout = timedelta(seconds=job_timeout_s)

    # ---- commands -------------------------------------------------------------------------

    async def create_job(
        self,
        tenant_id: str,
        image: image_pb2.Image,
        ops: Sequence[operations_pb2.Operation],
        idempotency_key: str,
        req_hash: str,
        renditions: Sequence[operations_pb2.Rendition] = (),
        webhook: job_pb2.Webhook | None = None,
        *,
        reuse: bool = True,
    ) -> tuple[job_pb2.Job, bool]:
        """`reuse` False: the tasks carry `recompute` (outputs computed even when stored)."""
        if idempotency_key:
            existing = await self._find_by_key(tenant_id, idempotency_key, req_hash)
            if existing is not None:
                return existing, False
        now = datetime.now(UTC)
        stages = [
            sm.StageRecord(
                idx=i,
                service=st.service,
                operations=_ops_blob(st.operations),
                input_key=input_key(image.sha256) if i == 0 else None,
                renditions=job_pb2.Stage(renditions=st.renditions).SerializeToString()
                if st.renditions
                else None,
                rendition_count=len(st.renditions),
            )
            for i, st in enumerate(plan_stages(ops, renditions))
        ]
        job = sm.JobRecord(
            job_id=f"job_{uuid.uuid4().hex}",
            tenant_id=tenant_id,
            image_id=image.image_id,
            state=sm.PENDING,
            operations=_ops_blob(ops),
            source=image.SerializeToString(),
            deadline=now + self.job_timeout,
            created_at=now,
            updated_at=now,
            stages=stages,
            idempotency_key=idempotency_key or None,
            request_hash=req_hash,
            renditions=job_pb2.Job(renditions=renditions).SerializeToString()
            if renditions
            else None,
            webhook=sm.WebhookRecord(webhook.url, "PENDING", 0) if webhook else None,
            recompute=not reuse,
        )
        out = _Outbox()
        out.task(job, 0)
        created = out.job_event(job)
        try:
            # One statement, so no explicit transaction: the job, its stages and its messages.
            async with _connection(self.pool) as conn:
                await conn.execute(
                    _CREATE,
                    job.job_id,
                    tenant_id,
                    job.image_id,
                    job.operations,
                    job.source,
                    job.idempotency_key,
                    req_hash,
                    job.deadline,
                    now,
                    job.renditions,
                    [s.idx for s in stages],
                    [s.service for s in stages],
                    [s.operations for s in stages],
                    [s.input_key for s in stages],
                    [s.renditions for s in stages],
                    out.subjects,
                    out.msg_ids,
                    out.payloads,
                    _headers(),
                    webhook.url if webhook else None,
                    self.secrets.seal(webhook.secret or None) if webhook else None,
                    job.recompute,
                )
        except asyncpg.UniqueViolationError:
            # A concurrent request with the same key won the race: answer like a retry.
            existing = await self._find_by_key(tenant_id, idempotency_key, req_hash)
            if existing is None:
                raise
            return existing, False
        metrics.JOBS_CREATED().inc()
        return created, True

    async def cancel(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        async with _transaction(self.pool) as conn:
            job, now = await _lock(conn, _LOCK.format("AND j.tenant_id = $2"), job_id, tenant_id)
            if job is None:
                raise errors.job_not_found(job_id)
            if job.state == sm.CANCELLED:
                # A retried cancel (its first reply lost) answers like the first one did.
                return _job_proto(job)
            if job.state in sm.TERMINAL:
                raise errors.job_finished(job_id, job.state)
            sm.finish(job, sm.CANCELLED, "CANCELLED", "CANCELLED", "cancelled by the caller", now)
            out = _Outbox()
            cancelled = out.job_event(job)
            await _save(conn, job, out)
            return cancelled

    async def apply_event(self, event: events_pb2.TaskEvent) -> None:
        """Apply a worker's event exactly once; duplicates and late events are no-ops."""
        kind = event.WhichOneof("outcome")
        async with _transaction(self.pool) as conn:
            job, now = await _lock(conn, _LOCK_FOR_EVENT, event.job_id, event.event_id)
            # A duplicate, an unknown job, or a late event for a cancelled/failed job.
            if job is None or job.state in sm.TERMINAL:
                return
            idx = event.stage_index
            if kind is None or idx >= len(job.stages):
                return
            out = _Outbox()
            if kind == "started":
                sm.start_stage(job, idx, event.started.attempt, now)
            elif kind == "completed":
                source_key = input_key(image_pb2.Image.FromString(job.source).sha256)
                nxt = sm.complete_stage(job, idx, _completion(event.completed), source_key, now)
                if nxt is not None:
                    out.task(job, nxt)
            else:
                err = event.failed.error
                sm.fail_stage(
                    job, idx, event.failed.attempts, err.code, err.reason, err.message, now
                )
            out.job_event(job)
            await _save(conn, job, out)
            _after_commit(metrics.JOBS_EVENTS_APPLIED().inc)

    async def retry_failed(self, job_id: str) -> job_pb2.Job:
        """Run a FAILED job again from its failed stage (operators replaying a dead letter)."""
        async with _transaction(self.pool) as conn:
            job, now = await _lock(conn, _LOCK.format(""), job_id)
            if job is None:
                raise errors.job_not_found(job_id)
            if job.state != sm.FAILED:
                raise errors.job_not_failed(job_id, job.state)
            idx = sm.restart_failed(job, now, now + self.job_timeout)
            out = _Outbox()
            # A replay gets a new task id: the first run's is spent in JetStream's dedup window
            # and in the events already applied. Unique without counting earlier tasks (the
            # outbox keeps no published rows to count).
            out.task(job, idx, suffix=f".retry{uuid.uuid4().hex[:12]}")
            retried = out.job_event(job)
            await _save(conn, job, out)
            return retried

    async def expire_overdue(self) -> int:
        """Fail open jobs whose deadline passed (a worker died for good, a queue stalled)."""
        async with _transaction(self.pool) as conn:
            rows = await conn.fetch(_LOCK_OVERDUE)
            jobs = _records(rows)
            for job in jobs:
                sm.finish(
                    job,
                    sm.FAILED,
                    "DEADLINE_EXCEEDED",
                    "DEADLINE_EXCEEDED",
                    "the job did not finish before its deadline",
                    rows[0]["now"],
                )
                out = _Outbox()
                out.job_event(job)
                await _save(conn, job, out)
            return len(jobs)

    # ---- queries --------------------------------------------------------------------------

    async def get(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        return _job_proto(await self._get(tenant_id, job_id))

    async def list(
        self, tenant_id: str, page_size: int, page_token: str, state: str | None
    ) -> tuple[list[job_pb2.Job], str]:
        args: list[Any] = [tenant_id, page_size + 1]
        where = ["tenant_id=$1"]
        if state:
            args.append(state)
            where.append(f"state=${len(args)}")
        if page_token:
            created, last_id = sm.decode_page_token(page_token)
            args += [created, last_id]
            where.append(f"(created_at, job_id) < (${len(args) - 1}, ${len(args)})")
        async with _connection(self.pool) as conn:
            rows = await conn.fetch(
                f"""SELECT {_JOB_COLUMNS} FROM (
                    SELECT * FROM jobs.jobs WHERE {" AND ".join(where)}
                    ORDER BY created_at DESC, job_id DESC LIMIT $2) j
                {_JOIN_STAGES}
                ORDER BY j.created_at DESC, j.job_id DESC, s.idx""",
                *args,
            )
        records = _records(rows)
        token = ""
        if len(records) > page_size:
            last = records[page_size - 1]
            token = sm.encode_page_token(last.created_at, last.job_id)
        return [_job_proto(r) for r in records[:page_size]], token

    async def output(self, tenant_id: str, job_id: str, index: int) -> tuple[job_pb2.Output, str]:
        job = await self._get(tenant_id, job_id)
        outputs = _outputs(job) if job.state == sm.SUCCEEDED else []
        if index >= len(outputs):
            if job.state == sm.SUCCEEDED:
                raise errors.output_not_found(job_id, index)
            raise errors.output_not_ready(job_id, job.state)
        return outputs[index]

    async def job_counts(self, window_s: float) -> JobCounts:
        """Jobs created and finished in the last `window_s` seconds, and open now, fleet-wide
        (for operators: GetFleetStatus). Each arm of the OR has an index."""
        async with _connection(self.pool) as conn:
            row = await conn.fetchrow(_COUNTS, window_s)
        assert row is not None
        counts = {k: int(v) for k, v in row.items() if k != "latency"}
        p50, p95 = row["latency"] or (None, None)
        return JobCounts(
            **counts,
            latency_p50_s=None if p50 is None else float(p50),
            latency_p95_s=None if p95 is None else float(p95),
        )

    async def count_running(self) -> int:
        """Jobs in state RUNNING, fleet-wide (the pixmesh_jobs_running gauge). Not traced: it
        is polled."""
        with suppress_instrumentation():
            n: int = await self.pool.fetchval(
                "SELECT count(*) FROM jobs.jobs WHERE state = 'RUNNING'"
            )
        return n

    # ---- outbox ---------------------------------------------------------------------------

    # In this class body `list` names the method above, hence `builtins.list` in annotations.
    @staticmethod
    async def claim_outbox(
        conn: asyncpg.Connection, limit: int = 100
    ) -> builtins.list[OutboxMessage]:
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
                    r["id"],
                    r["subject"],
                    r["msg_id"],
                    bytes(r["payload"]),
                    json.loads(r["headers"]),
                )
                for r in rows
            ),
            key=lambda m: m.id,
        )

    # ---- retention ------------------------------------------------------------------------

    async def trim_processed_events(self, older_than_s: float, batch: int = 5000) -> int:
        """Delete up to `batch` processed-event ids recorded more than `older_than_s` ago,
        oldest first; how many. Rows another replica is deleting are skipped (SKIP LOCKED), so
        every replica may run the trim and each row goes once."""
        async with _connection(self.pool) as conn:
            done: str = await conn.execute(_TRIM_PROCESSED, older_than_s, batch)
        return int(done.split()[-1])

    # ---- webhooks -------------------------------------------------------------------------

    async def claim_webhooks(self, limit: int, lease_s: float) -> builtins.list[WebhookDelivery]:
        """Due deliveries, at most `limit`, each claimed for one attempt for `lease_s`."""
        async with _connection(self.pool) as conn:
            rows = await conn.fetch(_CLAIM_WEBHOOKS, limit, lease_s)
        return [
            WebhookDelivery(
                r["job_id"],
                r["tenant_id"],
                r["url"],
                self.secrets.open(r["secret"]),
                r["event_id"] or "",
                r["attempts"],
            )
            for r in rows
        ]

    async def record_webhook(
        self, job_id: str, attempt: int, error: str | None, retry_in_s: float | None
    ) -> str | None:
        """Record attempt `attempt`: delivered (`error` None), retried in `retry_in_s`, or
        FAILED (`retry_in_s` None). The new state, None when the claim was no longer held."""
        async with _connection(self.pool) as conn:
            state: str | None = await conn.fetchval(
                _RECORD_WEBHOOK, job_id, attempt, error, retry_in_s
            )
        return state

    # ---- internals ------------------------------------------------------------------------

    async def _get(self, tenant_id: str, job_id: str) -> sm.JobRecord:
        async with _connection(self.pool) as conn:
            jobs = _records(await conn.fetch(_GET, job_id, tenant_id))
        if not jobs:
            raise errors.job_not_found(job_id)
        return jobs[0]

    async def _find_by_key(self, tenant_id: str, key: str, req_hash: str) -> job_pb2.Job | None:
        async with _connection(self.pool) as conn:
            jobs = _records(await conn.fetch(_BY_KEY, tenant_id, key))
        if not jobs:
            return None
        if jobs[0].request_hash != req_hash:
            raise errors.idempotency_mismatch()
        return _job_proto(jobs[0])


async def _lock(
    conn: asyncpg.Connection, query: str, *args: Any
) -> tuple[sm.JobRecord | None, datetime]:
    rows = await conn.fetch(query, *args)
    if not rows:
        return None, datetime.now(UTC)
    return _records(rows)[0], rows[0]["now"]


async def _save(conn: asyncpg.Connection, job: sm.JobRecord, out: _Outbox) -> None:
    if job.state in sm.TERMINAL and job.finished_at is not None:
        # Every caller locked an open job: a terminal state here is this transaction's doing.
        state, seconds = job.state, (job.finished_at - job.created_at).total_seconds()
        _after_commit(lambda: metrics.job_finished(state, seconds))
    stages = [job.stages[i] for i in sorted(job.changed)]
    await conn.execute(
        _SAVE,
        job.job_id,
        job.state,
        job.metadata,
        job.error_code,
        job.error_reason,
        job.error_message,
        job.deadline,
        job.updated_at,
        job.finished_at,
        [s.idx for s in stages],
        [s.state for s in stages],
        [s.attempts for s in stages],
        [s.input_key for s in stages],
        [s.output_key for s in stages],
        [s.output for s in stages],
        [s.reports for s in stages],
        [s.rendition_outputs for s in stages],
        [s.error_code for s in stages],
        [s.error_reason for s in stages],
        [s.error_message for s in stages],
        [s.started_at for s in stages],
        [s.finished_at for s in stages],
        out.subjects,
        out.msg_ids,
        out.payloads,
        _headers(),
        out.job_event_id,
    )
    job.changed.clear()


def _records(rows: Sequence[asyncpg.Record]) -> builtins.list[sm.JobRecord]:
    """Jobs from joined rows (one per stage, each job's rows together, stages in order)."""
    jobs: builtins.list[sm.JobRecord] = []
    for r in rows:
        if not jobs or jobs[-1].job_id != r["job_id"]:
            jobs.append(
                sm.JobRecord(
                    job_id=r["job_id"],
                    tenant_id=r["tenant_id"],
                    image_id=r["image_id"],
                    state=r["state"],
                    operations=r["operations"],
                    source=r["source"],
                    deadline=r["deadline"],
                    created_at=r["created_at"],
                    updated_at=r["updated_at"],
                    stages=[],
                    idempotency_key=r["idempotency_key"],
                    request_hash=r["request_hash"],
                    metadata=r["metadata"],
                    renditions=r["renditions"],
                    error_code=r["error_code"],
                    error_reason=r["error_reason"],
                    error_message=r["error_message"],
                    finished_at=r["finished_at"],
                    recompute=r["recompute"],
                    webhook=sm.WebhookRecord(
                        url=r["w_url"],
                        state=r["w_state"],
                        attempts=r["w_attempts"],
                        last_error=r["w_last_error"],
                        delivered_at=r["w_delivered_at"],
                    )
                    if r["w_url"] is not None
                    else None,
                )
            )
        renditions = r["s_renditions"]
        jobs[-1].stages.append(
            sm.StageRecord(
                idx=r["idx"],
                service=r["service"],
                state=r["s_state"],
                operations=r["s_operations"],
                attempts=r["attempts"],
                input_key=r["input_key"],
                output_key=r["output_key"],
                output=r["output"],
                reports=r["reports"],
                renditions=renditions,
                rendition_count=len(job_pb2.Stage.FromString(renditions).renditions)
                if renditions
                else 0,
                rendition_outputs=r["rendition_outputs"],
                error_code=r["s_error_code"],
                error_reason=r["s_error_reason"],
                error_message=r["s_error_message"],
                started_at=r["started_at"],
                finished_at=r["s_finished_at"],
            )
        )
    return jobs


def _completion(done: events_pb2.TaskCompleted) -> sm.Completion:
    return sm.Completion(
        output_key=done.output_key or None,
        output=done.output.SerializeToString() if done.HasField("output") else None,
        reports=job_pb2.Stage(reports=done.reports).SerializeToString() if done.reports else None,
        metadata=done.metadata.SerializeToString() if done.HasField("metadata") else None,
        rendition_outputs=events_pb2.TaskCompleted(
            rendition_outputs=done.rendition_outputs
        ).SerializeToString()
        if done.rendition_outputs
        else None,
        rendition_output_count=len(done.rendition_outputs),
        attempt=done.attempt,
    )


def _task(job: sm.JobRecord, idx: int, suffix: str) -> events_pb2.Task:
    stage = job.stages[idx]
    task = events_pb2.Task(
        task_id=f"{job.job_id}.{idx}{suffix}",
        job_id=job.job_id,
        tenant_id=job.tenant_id,
        stage_index=idx,
        service=stage.service,
        input_key=stage.input_key or "",
        recompute=job.recompute,
    )
    task.operations.extend(job_pb2.Job.FromString(stage.operations).operations)
    task.source.MergeFromString(job.source)
    if stage.renditions:
        task.renditions.extend(job_pb2.Stage.FromString(stage.renditions).renditions)
    task.deadline.FromDatetime(job.deadline)
    return task


def _job_proto(rec: sm.JobRecord, job: job_pb2.Job | None = None) -> job_pb2.Job:
    """The API's view of a job, built into `job` (a new message when None)."""
    if job is None:
        job = job_pb2.Job()
    job.job_id = rec.job_id
    job.image_id = rec.image_id
    job.state = _JOB_STATES[rec.state]
    # The payload columns are serialized Job/Stage messages holding just their field.
    job.MergeFromString(rec.operations)
    if rec.renditions:
        job.MergeFromString(rec.renditions)
    if rec.idempotency_key:
        job.idempotency_key = rec.idempotency_key
    for s in rec.stages:
        stage = job.stages.add()
        stage.index = s.idx
        stage.service = s.service
        stage.state = _STAGE_STATES[s.state]
        stage.attempts = s.attempts
        stage.operations.extend(job_pb2.Job.FromString(s.operations).operations)
        if s.error_code:
            _error(stage.error, s.error_code, s.error_reason, s.error_message)
        if s.reports:
            stage.MergeFromString(s.reports)
        if s.renditions:
            stage.MergeFromString(s.renditions)
        if s.started_at is not None:
            stage.started_at.FromDatetime(s.started_at)
        if s.finished_at is not None:
            stage.finished_at.FromDatetime(s.finished_at)
    job.progress = sm.progress(rec.stages)
    if rec.state == sm.SUCCEEDED:
        job.outputs.extend(out for out, _ in _outputs(rec))
    if rec.metadata:
        job.metadata.MergeFromString(rec.metadata)
    if rec.error_code:
        _error(job.error, rec.error_code, rec.error_reason, rec.error_message)
    job.created_at.FromDatetime(rec.created_at)
    job.updated_at.FromDatetime(rec.updated_at)
    if rec.finished_at is not None:
        job.finished_at.FromDatetime(rec.finished_at)
    if rec.webhook is not None:
        hook = job.webhook
        hook.url = rec.webhook.url
        hook.state = job_pb2.WebhookStatus.State.Value(rec.webhook.state)
        hook.attempts = rec.webhook.attempts
        hook.last_error = rec.webhook.last_error or ""
        if rec.webhook.delivered_at is not None:
            hook.delivered_at.FromDatetime(rec.webhook.delivered_at)
    return job


def _error(target: job_pb2.JobError, code: str, reason: str | None, message: str | None) -> None:
    target.code = code
    target.reason = reason or ""
    target.message = message or ""


def _outputs(job: sm.JobRecord) -> builtins.list[tuple[job_pb2.Output, str]]:
    """A succeeded job's outputs and their object keys: one per rendition when the job has
    renditions, else the image of the last stage that produced one (none for metadata only)."""
    branching = sm.rendition_stage(job.stages)
    if branching is not None and branching.renditions:
        names = [r.name for r in job_pb2.Stage.FromString(branching.renditions).renditions]
        made = events_pb2.TaskCompleted.FromString(branching.rendition_outputs or b"")
        outputs = []
        for i, (name, result) in enumerate(zip(names, made.rendition_outputs, strict=False)):
            out = job_pb2.Output()
            out.CopyFrom(result.output)
            out.index = i
            out.rendition = name
            out.download_path = f"/v1/jobs/{job.job_id}/outputs/{i}"
            outputs.append((out, result.key))
        return outputs
    final = sm.final_output_stage(job.stages)
    if final is None:
        return []
    out = job_pb2.Output()
    if final.output:
        out.MergeFromString(final.output)
    out.index = 0
    out.download_path = f"/v1/jobs/{job.job_id}/outputs/0"
    return [(out, str(final.output_key))]


@contextlib.asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; its reset on release (a round trip) is not traced."""
    with suppress_instrumentation():
        conn = await pool.acquire()
    try:
        yield conn
    finally:
        with suppress_instrumentation():
            await pool.release(conn)


# Metrics of the transaction in progress, recorded once it commits (None: outside one).
_on_commit: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "jobs_on_commit", default=None
)


def _after_commit(record: Callable[[], None]) -> None:
    pending = _on_commit.get()
    if pending is None:
        record()
    else:
        pending.append(record)


@contextlib.asynccontextmanager
async def _transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction: BEGIN is not traced, COMMIT (or ROLLBACK) is.
    Metrics of what it changed are recorded after the commit (a rollback records none)."""
    async with _connection(pool) as conn:
        tx = conn.transaction()
        with suppress_instrumentation():
            await tx.start()
        pending: list[Callable[[], None]] = []
        token = _on_commit.set(pending)
        try:
            yield conn
        except BaseException:
            await tx.rollback()
            raise
        finally:
            _on_commit.reset(token)
        await tx.commit()
        for record in pending:
            record()
