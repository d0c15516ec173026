"""Postgres access for the job registry: its SQL, and the records (services/jobs/statemachine.py)
read from and written to its rows. The rules that change a job are the service's
(services/jobs/service.py); what the records mean as protobuf is services/jobs/mapping.py.

Round trips are the cost that matters here (each is also a span): a change reads the job and
its stages in one statement, the service applies a rule of `statemachine` in memory, and `save`
writes the changed rows, the outbox messages and the relay's NOTIFY in a second statement.
Commands (cancel, retry, the deadline sweep) lock the job row and its stages in a transaction.
A worker event, the hot path, takes no lock and no transaction: it reads the job with its
version (the job row's `xmin`, the transaction that last wrote it: every change of a job or of
its stages writes the job row), and its save is one statement that writes only if the job row
still has that version, recording the event id in the same statement (two round trips instead
of BEGIN, lock, save, COMMIT). A save that finds the job changed writes nothing and the service
reads again. BEGIN and the pool's reset of a connection on release are round trips that say
nothing about a job: they are not traced (services/runtime/db.py).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from opentelemetry.instrumentation.utils import suppress_instrumentation

from services.jobs import errors, mapping
from services.jobs import statemachine as sm
from services.jobs.outbox import OUTBOX_CTE, Outbox
from services.jobs.webhook_store import WEBHOOK_CHANNEL
from services.runtime import metrics
from services.runtime.db import after_commit, connection, transaction
from services.runtime.secrets import SecretBox

# A job row joined with its stages, one result row per stage, in stage order.
_JOB_COLUMNS = """
    j.job_id, j.tenant_id, j.image_id, j.state, j.operations, j.source, j.idempotency_key,
    j.request_hash, j.metadata, j.renditions, j.error_code, j.error_reason, j.error_message,
    j.deadline, j.created_at, j.updated_at, j.finished_at, j.recompute, j.batch_id,
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

# A worker event: the job as it is, unlocked, with its version and the statement's time; no
# rows when the event was applied before (a duplicate). One snapshot: the job, its stages and
# the processed-event check agree.
_READ_FOR_EVENT = f"""SELECT {_JOB_COLUMNS}, now() AS now, j.xmin AS version
    FROM jobs.jobs j {_JOIN_STAGES}
    WHERE j.job_id = $1
        AND NOT EXISTS (SELECT FROM jobs.processed_events WHERE event_id = $2)
    ORDER BY s.idx"""

_LOCK_OVERDUE = f"""WITH due AS (
        SELECT job_id FROM jobs.jobs
        WHERE state IN ('PENDING','RUNNING') AND deadline < now()
        ORDER BY deadline LIMIT 100 FOR UPDATE SKIP LOCKED)
    SELECT {_JOB_COLUMNS}, now() AS now FROM due JOIN jobs.jobs j ON j.job_id = due.job_id
    {_JOIN_STAGES} ORDER BY j.deadline, j.job_id, s.idx"""

_CREATE = """WITH job AS (
        INSERT INTO jobs.jobs (job_id, tenant_id, image_id, state, operations, source,
            idempotency_key, request_hash, deadline, created_at, updated_at, renditions,
            recompute, batch_id)
        VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9, $9, $10, $22, $23)
        RETURNING job_id
    ), stages AS (
        INSERT INTO jobs.stages (job_id, idx, service, operations, state, input_key, renditions)
        SELECT job.job_id, v.idx, v.service, v.operations, 'PENDING', v.input_key, v.renditions
        FROM job, unnest($11::int[], $12::text[], $13::bytea[], $14::text[], $15::bytea[])
            AS v(idx, service, operations, input_key, renditions)
    ), webhook AS (
        INSERT INTO jobs.webhook_deliveries (job_id, url, secret)
        SELECT job.job_id, $20, $21 FROM job WHERE $20::text IS NOT NULL
    ), """ + OUTBOX_CTE.format(
    headers="$19", source="job,", arrays="$16::text[], $17::text[], $18::bytea[]"
)

# Writes back what a transition changed: the job row, the changed stages, the messages. A job
# that ends makes its webhook's delivery due (a replayed job that ends again delivers again), and
# wakes the delivery loop; for other changes the webhook update is a no-op on a constant-false
# condition. With a version ($28, a worker event's save), the job row is written only if it
# still has it (Postgres re-checks the condition on the latest row after waiting for a
# concurrent writer), and everything else only if the job row was: the event id ($29) is
# recorded, the stages and messages written. `saved` says whether it was.
_SAVE = (
    """WITH job AS (
        UPDATE jobs.jobs SET state = $2, metadata = $3, error_code = $4, error_reason = $5,
            error_message = $6, deadline = $7, updated_at = $8, finished_at = $9
        WHERE job_id = $1 AND ($28::xid IS NULL OR xmin = $28::xid)
        RETURNING job_id
    ), fresh AS (
        INSERT INTO jobs.processed_events (event_id)
        SELECT $29::text FROM job WHERE $29::text IS NOT NULL
        ON CONFLICT DO NOTHING
    ), stages AS (
        UPDATE jobs.stages AS s SET state = v.state, attempts = v.attempts,
            input_key = v.input_key, output_key = v.output_key, output = v.output,
            reports = v.reports, rendition_outputs = v.rendition_outputs,
            error_code = v.error_code, error_reason = v.error_reason,
            error_message = v.error_message, started_at = v.started_at,
            finished_at = v.finished_at
        FROM job, unnest($10::int[], $11::text[], $12::int[], $13::text[], $14::text[],
                    $15::bytea[], $16::bytea[], $17::bytea[], $18::text[], $19::text[],
                    $20::text[], $21::timestamptz[], $22::timestamptz[])
            AS v(idx, state, attempts, input_key, output_key, output, reports, rendition_outputs,
                 error_code, error_reason, error_message, started_at, finished_at)
        WHERE s.job_id = job.job_id AND s.idx = v.idx
    ), webhook AS (
        UPDATE jobs.webhook_deliveries w SET state = 'PENDING', attempts = 0, last_error = NULL,
            delivered_at = NULL, event_id = $27, next_attempt_at = $8
        FROM job
        WHERE w.job_id = job.job_id AND $2 IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
        RETURNING w.job_id
    ), """
    + OUTBOX_CTE.format(
        headers="$26", source="job,", arrays="$23::text[], $24::text[], $25::bytea[]"
    )
    + ", (SELECT pg_notify('"
    + WEBHOOK_CHANNEL
    + "', '') FROM webhook), (SELECT count(*) FROM job) AS saved"
)


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

# A locked job (None: no such job) and the transaction's time.
Locked = tuple[sm.JobRecord | None, datetime]
# A job read for a worker event (None: no such job, or a duplicate event), the statement's time
# and the job row's version.
Read = tuple[sm.JobRecord | None, datetime, int]


class JobsRepository:
    # In this class body `list` names a method, hence `builtins.list` in annotations.
    def __init__(
        self, pool: asyncpg.Pool, *, job_timeout_s: float, secrets: SecretBox | None = None
    ) -> None:
        # Seals webhook secrets at rest (services/runtime/secrets.py); None: stored as given.
        self.secrets = secrets or SecretBox(())
        self.pool = pool
        # How long a job (or a replay of it) may run: its deadline from when it starts.
        self.job_timeout = timedelta(seconds=job_timeout_s)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection in a transaction, for `lock*` and `save` (services/runtime/db.py)."""
        return transaction(self.pool)

    # ---- writes ---------------------------------------------------------------------------

    async def insert(self, job: sm.JobRecord, out: Outbox, webhook_secret: str | None) -> None:
        """Write a new job, its stages, its webhook delivery and its messages in one statement
        (so no explicit transaction). Raises asyncpg.UniqueViolationError when the tenant
        already has a job under the same idempotency key."""
        async with connection(self.pool) as conn:
            await conn.execute(
                _CREATE,
                job.job_id,
                job.tenant_id,
                job.image_id,
                job.operations,
                job.source,
                job.idempotency_key,
                job.request_hash,
                job.deadline,
                job.created_at,
                job.renditions,
                *_columns(job.stages, _INSERTED_STAGE_COLUMNS),
                *out.params(),
                job.webhook.url if job.webhook else None,
                self.secrets.seal(webhook_secret or None) if job.webhook else None,
                job.recompute,
                job.batch_id,
            )

    @staticmethod
    async def lock(conn: asyncpg.Connection, job_id: str, tenant_id: str | None = None) -> Locked:
        """The job (of `tenant_id` when given) locked with its stages, and the transaction's
        time; (None, now) when there is no such job."""
        if tenant_id is None:
            return await _lock(conn, _LOCK.format(""), job_id)
        return await _lock(conn, _LOCK.format("AND j.tenant_id = $2"), job_id, tenant_id)

    @staticmethod
    async def read_for_event(conn: asyncpg.Connection, job_id: str, event_id: str) -> Read:
        """The job as it is for a worker event (not locked), the statement's time and the job
        row's version, for `save(..., version=, event_id=)`; (None, now, 0) when the event was
        applied before (or the job is unknown)."""
        rows = await conn.fetch(_READ_FOR_EVENT, job_id, event_id)
        if not rows:
            return None, datetime.now(UTC), 0
        return _records(rows)[0], rows[0]["now"], rows[0]["version"]

    @staticmethod
    async def lock_overdue(
        conn: asyncpg.Connection,
    ) -> tuple[builtins.list[sm.JobRecord], datetime]:
        """Up to 100 open jobs past their deadline, locked (skipping those another replica
        holds), and the transaction's time."""
        rows = await conn.fetch(_LOCK_OVERDUE)
        return _records(rows), rows[0]["now"] if rows else datetime.now(UTC)

    @staticmethod
    async def save(
        conn: asyncpg.Connection,
        job: sm.JobRecord,
        out: Outbox,
        *,
        version: int | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Write back what a transition changed (the job row, the changed stages) with the
        messages announcing it; a job that ended makes its webhook delivery due. Given the
        `version` `read_for_event` returned (no lock held), write only if the job row still has
        it, recording `event_id` as applied; False when it did not (nothing written)."""
        stages = [job.stages[i] for i in sorted(job.changed)]
        row = await conn.fetchrow(
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
            *_columns(stages, _SAVED_STAGE_COLUMNS),
            *out.params(),
            out.job_event_id,
            version,
            event_id,
        )
        assert row is not None
        if not row["saved"]:
            return False
        if job.state in sm.TERMINAL and job.finished_at is not None:
            # Every caller read an open job: a terminal state here is this change's doing.
            state, seconds = job.state, (job.finished_at - job.created_at).total_seconds()
            after_commit(lambda: metrics.job_finished(state, seconds))
        job.changed.clear()
        return True

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, tenant_id: str, job_id: str) -> sm.JobRecord:
        async with connection(self.pool) as conn:
            jobs = _records(await conn.fetch(_GET, job_id, tenant_id))
        if not jobs:
            raise errors.job_not_found(job_id)
        return jobs[0]

    async def find_by_key(self, tenant_id: str, key: str) -> sm.JobRecord | None:
        """The tenant's job created under idempotency key `key`, if any."""
        async with connection(self.pool) as conn:
            jobs = _records(await conn.fetch(_BY_KEY, tenant_id, key))
        return jobs[0] if jobs else None

    async def list(
        self, tenant_id: str, page_size: int, page_token: str, state: str | None
    ) -> tuple[builtins.list[sm.JobRecord], str]:
        """A page of the tenant's jobs, newest first, and the token of the next page."""
        args: builtins.list[Any] = [tenant_id, page_size + 1]
        where = ["tenant_id=$1"]
        if state:
            args.append(state)
            where.append(f"state=${len(args)}")
        if page_token:
            created, last_id = sm.decode_page_token(page_token)
            args += [created, last_id]
            where.append(f"(created_at, job_id) < (${len(args) - 1}, ${len(args)})")
        async with connection(self.pool) as conn:
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
        return records[:page_size], token

    async def job_counts(self, window_s: float) -> JobCounts:
        """Jobs created and finished in the last `window_s` seconds, and open now, fleet-wide
        (for operators: GetFleetStatus). Each arm of the OR has an index."""
        async with connection(self.pool) as conn:
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

    # ---- retention ------------------------------------------------------------------------

    async def trim_processed_events(self, older_than_s: float, batch: int = 5000) -> int:
        """Delete up to `batch` processed-event ids recorded more than `older_than_s` ago,
        oldest first; how many. Rows another replica is deleting are skipped (SKIP LOCKED), so
        every replica may run the trim and each row goes once."""
        async with connection(self.pool) as conn:
            done: str = await conn.execute(_TRIM_PROCESSED, older_than_s, batch)
        return int(done.split()[-1])


# The stage fields each statement writes, in the order of its unnest() arrays.
_INSERTED_STAGE_COLUMNS = ("idx", "service", "operations", "input_key", "renditions")
_SAVED_STAGE_COLUMNS = (
    "idx",
    "state",
    "attempts",
    "input_key",
    "output_key",
    "output",
    "reports",
    "rendition_outputs",
    "error_code",
    "error_reason",
    "error_message",
    "started_at",
    "finished_at",
)


def _columns(stages: Sequence[sm.StageRecord], names: Sequence[str]) -> list[list[Any]]:
    """One array parameter per field: the stages' values, in stage order."""
    return [[getattr(s, name) for s in stages] for name in names]


async def _lock(conn: asyncpg.Connection, query: str, *args: Any) -> Locked:
    rows = await conn.fetch(query, *args)
    if not rows:
        return None, datetime.now(UTC)
    return _records(rows)[0], rows[0]["now"]


def _records(rows: Sequence[asyncpg.Record]) -> list[sm.JobRecord]:
    """Jobs from joined rows (one per stage, each job's rows together, stages in order)."""
    jobs: list[sm.JobRecord] = []
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
                    batch_id=r["batch_id"],
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
                renditions=r["s_renditions"],
                rendition_count=mapping.rendition_count(r["s_renditions"]),
                rendition_outputs=r["rendition_outputs"],
                error_code=r["s_error_code"],
                error_reason=r["s_error_reason"],
                error_message=r["s_error_message"],
                started_at=r["started_at"],
                finished_at=r["s_finished_at"],
            )
        )
    return jobs
