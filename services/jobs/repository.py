"""Postgres access for the job registry. Every state change and the messages that announce it
(tasks, job events) are written in ONE transaction; the outbox relay publishes them."""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf.message import Message

from pixmesh.common.v1 import image_pb2, job_pb2, metadata_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import errors
from services.jobs import statemachine as sm
from services.runtime import bus
from services.runtime.pipeline import plan_stages
from services.runtime.storage import input_key
from services.runtime.telemetry import inject_headers

OUTBOX_CHANNEL = "jobs_outbox"


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    subject: str
    msg_id: str
    payload: bytes
    headers: dict[str, str]


def _ops_blob(ops: Sequence[operations_pb2.Operation]) -> bytes:
    return job_pb2.Job(operations=ops).SerializeToString()


def _ops_from_blob(blob: bytes) -> list[operations_pb2.Operation]:
    return list(job_pb2.Job.FromString(blob).operations)


def _renditions_blob(renditions: Sequence[operations_pb2.Rendition]) -> bytes | None:
    return job_pb2.Job(renditions=renditions).SerializeToString() if renditions else None


def _stage_renditions_blob(renditions: Sequence[operations_pb2.Rendition]) -> bytes | None:
    return job_pb2.Stage(renditions=renditions).SerializeToString() if renditions else None


def _ts(value: datetime | None, target: Any) -> None:
    if value is not None:
        target.FromDatetime(value)


def _error(row: asyncpg.Record) -> job_pb2.JobError | None:
    if not row["error_code"]:
        return None
    return job_pb2.JobError(
        code=row["error_code"], reason=row["error_reason"], message=row["error_message"]
    )


class JobsRepository:
    def __init__(self, pool: asyncpg.Pool, *, job_timeout_s: float) -> None:
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
    ) -> tuple[job_pb2.Job, bool]:
        if idempotency_key:
            existing = await self._find_by_key(tenant_id, idempotency_key, req_hash)
            if existing is not None:
                return existing, False
        job_id = f"job_{uuid.uuid4().hex}"
        stages = plan_stages(ops, renditions)
        now = datetime.now(UTC)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO jobs.jobs (job_id, tenant_id, image_id, state, operations, source,
                         idempotency_key, request_hash, deadline, created_at, updated_at, renditions)
                       VALUES ($1,$2,$3,'PENDING',$4,$5,$6,$7,$8,$9,$9,$10)""",
                    job_id,
                    tenant_id,
                    image.image_id,
                    _ops_blob(ops),
                    image.SerializeToString(),
                    idempotency_key or None,
                    req_hash,
                    now + self.job_timeout,
                    now,
                    _renditions_blob(renditions),
                )
                await conn.executemany(
                    """INSERT INTO jobs.stages (job_id, idx, service, operations, state, input_key,
                         renditions)
                       VALUES ($1,$2,$3,$4,'PENDING',$5,$6)""",
                    [
                        (
                            job_id,
                            i,
                            st.service,
                            _ops_blob(st.operations),
                            input_key(image.sha256) if i == 0 else None,
                            _stage_renditions_blob(st.renditions),
                        )
                        for i, st in enumerate(stages)
                    ],
                )
                await self._enqueue_task(conn, job_id, 0)
                job = await self._load(conn, job_id)
                await self._enqueue_job_event(conn, tenant_id, job)
        except asyncpg.UniqueViolationError:
            # A concurrent request with the same key won the race: answer like a retry.
            existing = await self._find_by_key(tenant_id, idempotency_key, req_hash)
            if existing is None:
                raise
            return existing, False
        return job, True

    async def cancel(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT state FROM jobs.jobs WHERE job_id=$1 AND tenant_id=$2 FOR UPDATE",
                job_id,
                tenant_id,
            )
            if row is None:
                raise errors.job_not_found(job_id)
            if row["state"] == sm.CANCELLED:
                # A retried cancel (its first reply lost) answers like the first one did.
                return await self._load(conn, job_id)
            if row["state"] in sm.TERMINAL:
                raise errors.job_finished(job_id, row["state"])
            await self._finish(
                conn, job_id, sm.CANCELLED, "CANCELLED", "CANCELLED", "cancelled by the caller"
            )
            job = await self._load(conn, job_id)
            await self._enqueue_job_event(conn, tenant_id, job)
            return job

    async def apply_event(self, event: events_pb2.TaskEvent) -> None:
        """Apply a worker's event exactly once; duplicates and late events are no-ops."""
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO jobs.processed_events (event_id) VALUES ($1)"
                " ON CONFLICT DO NOTHING RETURNING true",
                event.event_id,
            )
            if not fresh:
                return
            job = await conn.fetchrow(
                "SELECT tenant_id, state, source FROM jobs.jobs WHERE job_id=$1 FOR UPDATE",
                event.job_id,
            )
            if job is None or job["state"] in sm.TERMINAL:
                return  # unknown job, or a late event for a cancelled/failed job
            idx = event.stage_index
            kind = event.WhichOneof("outcome")
            if kind == "started":
                await conn.execute(
                    """UPDATE jobs.stages SET state='RUNNING', attempts=GREATEST(attempts,$3),
                         started_at=COALESCE(started_at, now())
                       WHERE job_id=$1 AND idx=$2 AND state IN ('PENDING','RUNNING')""",
                    event.job_id,
                    idx,
                    event.started.attempt,
                )
                await conn.execute(
                    "UPDATE jobs.jobs SET state='RUNNING', updated_at=now()"
                    " WHERE job_id=$1 AND state='PENDING'",
                    event.job_id,
                )
            elif kind == "completed":
                await self._complete_stage(conn, event, job["source"])
            elif kind == "failed":
                await self._fail_stage(conn, event, event.failed.attempts, event.failed.error)
            else:
                return
            await self._enqueue_job_event(
                conn, job["tenant_id"], await self._load(conn, event.job_id)
            )

    async def _fail_stage(
        self,
        conn: asyncpg.Connection,
        event: events_pb2.TaskEvent,
        attempts: int,
        err: job_pb2.JobError,
    ) -> None:
        await conn.execute(
            """UPDATE jobs.stages SET state='FAILED', attempts=GREATEST(attempts,$3),
                 error_code=$4, error_reason=$5, error_message=$6, finished_at=now()
               WHERE job_id=$1 AND idx=$2""",
            event.job_id,
            event.stage_index,
            attempts,
            err.code,
            err.reason,
            err.message,
        )
        await self._finish(conn, event.job_id, sm.FAILED, err.code, err.reason, err.message)

    async def retry_failed(self, job_id: str) -> job_pb2.Job:
        """Run a FAILED job again from its failed stage (operators replaying a dead letter)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT tenant_id, state FROM jobs.jobs WHERE job_id=$1 FOR UPDATE", job_id
            )
            if row is None:
                raise errors.job_not_found(job_id)
            if row["state"] != sm.FAILED:
                raise errors.job_not_failed(job_id, row["state"])
            idx = await conn.fetchval(
                "SELECT min(idx) FROM jobs.stages WHERE job_id=$1 AND state <> 'SUCCEEDED'", job_id
            )
            await conn.execute(
                """UPDATE jobs.jobs SET state='RUNNING', error_code=NULL, error_reason=NULL,
                     error_message=NULL, finished_at=NULL, updated_at=now(),
                     deadline=now() + $2::interval
                   WHERE job_id=$1""",
                job_id,
                self.job_timeout,
            )
            await conn.execute(
                """UPDATE jobs.stages SET state='PENDING', error_code=NULL, error_reason=NULL,
                     error_message=NULL, started_at=NULL, finished_at=NULL
                   WHERE job_id=$1 AND idx >= $2""",
                job_id,
                idx,
            )
            retries = await conn.fetchval(
                "SELECT count(*) FROM jobs.outbox WHERE msg_id LIKE $1", f"{job_id}.{idx}%"
            )
            await self._enqueue_task(conn, job_id, idx, suffix=f".retry{retries}")
            job = await self._load(conn, job_id)
            await self._enqueue_job_event(conn, row["tenant_id"], job)
            return job

    async def expire_overdue(self) -> int:
        """Fail open jobs whose deadline passed (a worker died for good, a queue stalled)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT job_id, tenant_id FROM jobs.jobs
                   WHERE state IN ('PENDING','RUNNING') AND deadline < now()
                   ORDER BY deadline LIMIT 100 FOR UPDATE SKIP LOCKED"""
            )
            for r in rows:
                await self._finish(
                    conn,
                    r["job_id"],
                    sm.FAILED,
                    "DEADLINE_EXCEEDED",
                    "DEADLINE_EXCEEDED",
                    "the job did not finish before its deadline",
                )
                await self._enqueue_job_event(
                    conn, r["tenant_id"], await self._load(conn, r["job_id"])
                )
            return len(rows)

    # ---- queries --------------------------------------------------------------------------

    async def get(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        async with self.pool.acquire() as conn:
            owner = await conn.fetchval("SELECT tenant_id FROM jobs.jobs WHERE job_id=$1", job_id)
            if owner != tenant_id:
                raise errors.job_not_found(job_id)
            return await self._load(conn, job_id)

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
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT job_id, created_at FROM jobs.jobs WHERE {' AND '.join(where)}"
                " ORDER BY created_at DESC, job_id DESC LIMIT $2",
                *args,
            )
            jobs = [await self._load(conn, r["job_id"]) for r in rows[:page_size]]
        token = ""
        if len(rows) > page_size:
            last = rows[page_size - 1]
            token = sm.encode_page_token(last["created_at"], last["job_id"])
        return jobs, token

    async def output(self, tenant_id: str, job_id: str, index: int) -> tuple[job_pb2.Output, str]:
        async with self.pool.acquire() as conn:
            owner = await conn.fetchval("SELECT tenant_id FROM jobs.jobs WHERE job_id=$1", job_id)
            if owner != tenant_id:
                raise errors.job_not_found(job_id)
            state = await conn.fetchval("SELECT state FROM jobs.jobs WHERE job_id=$1", job_id)
            stage_rows = await conn.fetch(
                "SELECT * FROM jobs.stages WHERE job_id=$1 ORDER BY idx", job_id
            )
        outputs = _outputs(job_id, _views(stage_rows), stage_rows) if state == sm.SUCCEEDED else []
        if index >= len(outputs):
            if state == sm.SUCCEEDED:
                raise errors.output_not_found(job_id, index)
            raise errors.output_not_ready(job_id, state)
        return outputs[index]

    # ---- outbox ---------------------------------------------------------------------------

    # In this class body `list` names the method above, hence `builtins.list` in annotations.
    async def claim_outbox(
        self, conn: asyncpg.Connection, limit: int = 100
    ) -> builtins.list[OutboxMessage]:
        rows = await conn.fetch(
            """SELECT id, subject, msg_id, payload, headers FROM jobs.outbox
               WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [
            OutboxMessage(
                r["id"], r["subject"], r["msg_id"], bytes(r["payload"]), json.loads(r["headers"])
            )
            for r in rows
        ]

    @staticmethod
    async def mark_published(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
        await conn.execute(
            "UPDATE jobs.outbox SET published_at=now() WHERE id = ANY($1::bigint[])", list(ids)
        )

    # ---- internals ------------------------------------------------------------------------

    async def _find_by_key(self, tenant_id: str, key: str, req_hash: str) -> job_pb2.Job | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT job_id, request_hash FROM jobs.jobs WHERE tenant_id=$1 AND idempotency_key=$2",
                tenant_id,
                key,
            )
            if row is None:
                return None
            if row["request_hash"] != req_hash:
                raise errors.idempotency_mismatch()
            return await self._load(conn, row["job_id"])

    async def _complete_stage(
        self, conn: asyncpg.Connection, event: events_pb2.TaskEvent, source_blob: bytes
    ) -> None:
        done = event.completed
        blob = await conn.fetchval(
            "SELECT renditions FROM jobs.stages WHERE job_id=$1 AND idx=$2",
            event.job_id,
            event.stage_index,
        )
        expected = len(job_pb2.Stage.FromString(blob).renditions) if blob else 0
        if len(done.rendition_outputs) != expected:
            # A worker that does not know renditions (or a broken one): failing the job says so,
            # where succeeding would hand out the wrong images.
            err = job_pb2.JobError(
                code="INTERNAL",
                reason="BAD_RENDITION_OUTPUTS",
                message=f"the stage reported {len(done.rendition_outputs)} rendition outputs"
                f" for {expected} renditions",
            )
            await self._fail_stage(conn, event, 0, err)
            return
        await conn.execute(
            """UPDATE jobs.stages SET state='SUCCEEDED', output_key=$3, output=$4, reports=$5,
                 rendition_outputs=$6, started_at=COALESCE(started_at, now()), finished_at=now()
               WHERE job_id=$1 AND idx=$2""",
            event.job_id,
            event.stage_index,
            done.output_key or None,
            done.output.SerializeToString() if done.HasField("output") else None,
            job_pb2.Stage(reports=done.reports).SerializeToString() if done.reports else None,
            events_pb2.TaskCompleted(rendition_outputs=done.rendition_outputs).SerializeToString()
            if done.rendition_outputs
            else None,
        )
        if done.HasField("metadata"):
            await conn.execute(
                "UPDATE jobs.jobs SET metadata=$2 WHERE job_id=$1",
                event.job_id,
                done.metadata.SerializeToString(),
            )
        stages = await self._stage_views(conn, event.job_id)
        if event.stage_index + 1 < len(stages):
            source = image_pb2.Image.FromString(source_blob)
            key = sm.next_input_key(stages, event.stage_index, input_key(source.sha256))
            await conn.execute(
                "UPDATE jobs.stages SET input_key=$3 WHERE job_id=$1 AND idx=$2",
                event.job_id,
                event.stage_index + 1,
                key,
            )
            await conn.execute(
                "UPDATE jobs.jobs SET state='RUNNING', updated_at=now() WHERE job_id=$1",
                event.job_id,
            )
            await self._enqueue_task(conn, event.job_id, event.stage_index + 1)
        else:
            await conn.execute(
                "UPDATE jobs.jobs SET state='SUCCEEDED', updated_at=now(), finished_at=now()"
                " WHERE job_id=$1",
                event.job_id,
            )

    async def _finish(
        self,
        conn: asyncpg.Connection,
        job_id: str,
        state: str,
        code: str,
        reason: str,
        message: str,
    ) -> None:
        await conn.execute(
            """UPDATE jobs.jobs SET state=$2, error_code=$3, error_reason=$4, error_message=$5,
                 updated_at=now(), finished_at=now() WHERE job_id=$1""",
            job_id,
            state,
            code,
            reason,
            message,
        )
        await conn.execute(
            "UPDATE jobs.stages SET state='CANCELLED', finished_at=now()"
            " WHERE job_id=$1 AND state IN ('PENDING','RUNNING')",
            job_id,
        )

    async def _stage_views(
        self, conn: asyncpg.Connection, job_id: str
    ) -> builtins.list[sm.StageView]:
        rows = await conn.fetch(
            "SELECT idx, service, state, input_key, output_key FROM jobs.stages"
            " WHERE job_id=$1 ORDER BY idx",
            job_id,
        )
        return [
            sm.StageView(r["idx"], r["service"], r["state"], r["input_key"], r["output_key"])
            for r in rows
        ]

    async def _enqueue_task(
        self, conn: asyncpg.Connection, job_id: str, idx: int, suffix: str = ""
    ) -> None:
        job = await conn.fetchrow(
            "SELECT tenant_id, source, deadline FROM jobs.jobs WHERE job_id=$1", job_id
        )
        stage = await conn.fetchrow(
            "SELECT service, operations, input_key, renditions FROM jobs.stages"
            " WHERE job_id=$1 AND idx=$2",
            job_id,
            idx,
        )
        source = image_pb2.Image.FromString(job["source"])
        task = events_pb2.Task(
            # A replay gets a new id: the first run's id is spent in JetStream's dedup window
            # and in the events already applied.
            task_id=f"{job_id}.{idx}{suffix}",
            job_id=job_id,
            tenant_id=job["tenant_id"],
            stage_index=idx,
            service=stage["service"],
            operations=_ops_from_blob(stage["operations"]),
            input_key=stage["input_key"],
            source=source,
        )
        if stage["renditions"]:
            task.renditions.extend(job_pb2.Stage.FromString(stage["renditions"]).renditions)
        task.deadline.FromDatetime(job["deadline"])
        await self._enqueue(conn, bus.task_subject(stage["service"]), task.task_id, task)

    async def _enqueue_job_event(
        self, conn: asyncpg.Connection, tenant_id: str, job: job_pb2.Job
    ) -> None:
        event_id = f"{job.job_id}.{uuid.uuid4().hex[:12]}"
        msg = events_pb2.JobStateChanged(event_id=event_id, tenant_id=tenant_id, job=job)
        await self._enqueue(conn, bus.job_event_subject(job.job_id), event_id, msg)

    @staticmethod
    async def _enqueue(conn: asyncpg.Connection, subject: str, msg_id: str, msg: Message) -> None:
        # The trace context of the request that caused the message travels with it.
        headers = dict(inject_headers({}))
        await conn.execute(
            "INSERT INTO jobs.outbox (subject, msg_id, payload, headers) VALUES ($1,$2,$3,$4)",
            subject,
            msg_id,
            msg.SerializeToString(),
            json.dumps(headers),
        )
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")

    async def _load(self, conn: asyncpg.Connection, job_id: str) -> job_pb2.Job:
        row = await conn.fetchrow("SELECT * FROM jobs.jobs WHERE job_id=$1", job_id)
        if row is None:
            raise errors.job_not_found(job_id)
        stage_rows = await conn.fetch(
            "SELECT * FROM jobs.stages WHERE job_id=$1 ORDER BY idx", job_id
        )
        job = job_pb2.Job(
            job_id=job_id,
            image_id=row["image_id"],
            state=job_pb2.Job.State.Value(row["state"]),
            operations=_ops_from_blob(row["operations"]),
            idempotency_key=row["idempotency_key"] or "",
        )
        if row["renditions"]:
            job.MergeFromString(row["renditions"])
        for s in stage_rows:
            stage = job.stages.add(
                index=s["idx"],
                service=s["service"],
                operations=_ops_from_blob(s["operations"]),
                state=job_pb2.Stage.State.Value(s["state"]),
                attempts=s["attempts"],
            )
            if (err := _error(s)) is not None:
                stage.error.CopyFrom(err)
            if s["reports"]:
                stage.reports.extend(job_pb2.Stage.FromString(s["reports"]).reports)
            if s["renditions"]:
                stage.MergeFromString(s["renditions"])
            _ts(s["started_at"], stage.started_at)
            _ts(s["finished_at"], stage.finished_at)
        views = _views(stage_rows)
        job.progress = sm.progress(views)
        if job.state == job_pb2.Job.SUCCEEDED:
            for out, _ in _outputs(job_id, views, stage_rows):
                job.outputs.append(out)
        if row["metadata"]:
            job.metadata.CopyFrom(metadata_pb2.ImageMetadata.FromString(row["metadata"]))
        if (err := _error(row)) is not None:
            job.error.CopyFrom(err)
        _ts(row["created_at"], job.created_at)
        _ts(row["updated_at"], job.updated_at)
        _ts(row["finished_at"], job.finished_at)
        return job


def _views(stage_rows: Sequence[asyncpg.Record]) -> list[sm.StageView]:
    return [
        sm.StageView(s["idx"], s["service"], s["state"], s["input_key"], s["output_key"])
        for s in stage_rows
    ]


def _outputs(
    job_id: str, views: Sequence[sm.StageView], stage_rows: Sequence[asyncpg.Record]
) -> list[tuple[job_pb2.Output, str]]:
    """A succeeded job's outputs and their object keys: one per rendition when the job has
    renditions, else the image of the last stage that produced one (none for metadata only)."""
    for s in stage_rows:
        if s["renditions"]:
            names = [r.name for r in job_pb2.Stage.FromString(s["renditions"]).renditions]
            done = events_pb2.TaskCompleted.FromString(s["rendition_outputs"] or b"")
            outputs = []
            for i, (name, made) in enumerate(zip(names, done.rendition_outputs, strict=False)):
                out = job_pb2.Output()
                out.CopyFrom(made.output)
                out.index = i
                out.rendition = name
                out.download_path = f"/v1/jobs/{job_id}/outputs/{i}"
                outputs.append((out, made.key))
            return outputs
    final = sm.final_output_stage(views)
    if final is None:
        return []
    out = job_pb2.Output()
    blob = next(s["output"] for s in stage_rows if s["idx"] == final.idx)
    if blob:
        out.MergeFromString(blob)
    out.index = 0
    out.download_path = f"/v1/jobs/{job_id}/outputs/0"
    return [(out, str(final.output_key))]
