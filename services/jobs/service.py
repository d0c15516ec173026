"""The job registry's logic: create/read/cancel jobs, apply worker events (the transitions of
services/jobs/statemachine.py on records the repository locked), replay failed jobs, watch jobs
live, deliver webhooks and fail jobs that outlive their deadline. Every change is saved with the
messages that announce it (services/jobs/outbox.py), in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import errors, mapping, webhooks
from services.jobs import statemachine as sm
from services.jobs.outbox import Outbox
from services.jobs.repository import JobsRepository
from services.jobs.webhook_store import WEBHOOK_CHANNEL, WebhookDelivery, WebhookStore
from services.runtime import bus as busmod
from services.runtime import db, metrics
from services.runtime.bus import Bus
from services.runtime.errors import invalid
from services.runtime.pipeline import check_renditions, op_name, request_hash

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
# WatchJob re-reads the job this often even without events, so a missed event costs latency,
# never correctness.
WATCH_RESYNC_S = 5.0

_TERMINAL = {job_pb2.Job.SUCCEEDED, job_pb2.Job.FAILED, job_pb2.Job.CANCELLED}
# Webhook deliveries claimed (and attempted concurrently) per round.
WEBHOOK_BATCH = 16
# Rows deleted per retention statement (short transactions, short locks).
TRIM_BATCH = 5000


class JobsService:
    def __init__(
        self,
        repo: JobsRepository,
        bus: Bus,
        *,
        max_renditions: int = 10,
        webhook_policy: webhooks.WebhookPolicy | None = None,
        webhook_store: WebhookStore | None = None,
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.max_renditions = max_renditions
        self.webhook_policy = webhook_policy or webhooks.WebhookPolicy()
        self.webhook_store = webhook_store or WebhookStore(repo.pool, repo.secrets)

    async def create_job(
        self,
        tenant_id: str,
        image: image_pb2.Image,
        ops: Sequence[operations_pb2.Operation],
        idempotency_key: str,
        req_hash: str = "",
        renditions: Sequence[operations_pb2.Rendition] = (),
        webhook: job_pb2.Webhook | None = None,
        *,
        reuse: bool = True,
        batch_id: str | None = None,
    ) -> tuple[job_pb2.Job, bool]:
        if not tenant_id:
            raise invalid("tenant_id", "required")
        if not image.image_id or not image.sha256:
            raise invalid("image", "image_id and sha256 are required")
        if not ops and not renditions:
            raise invalid("operations", "at least one operation (or rendition) is required")
        for i, op in enumerate(ops):
            op_name(op, i)
        check_renditions(renditions, self.max_renditions)
        if webhook is not None and not webhook.url:
            raise invalid("webhook.url", "required with a webhook")
        req_hash = req_hash or request_hash(
            image, ops, renditions, webhook_url=webhook.url if webhook else ""
        )
        # A key is not looked up first: the insert meets the job already under it (the unique
        # constraint), and only then is it read (a round trip less for every new key: the batch
        # feeder keys each of its jobs).
        now = datetime.now(UTC)
        job = mapping.new_job(
            tenant_id,
            image,
            ops,
            renditions,
            webhook,
            idempotency_key=idempotency_key,
            req_hash=req_hash,
            now=now,
            deadline=now + self.repo.job_timeout,
            # `reuse` False: the tasks carry `recompute` (outputs computed even when stored).
            recompute=not reuse,
            # Only the batch feeder passes it: the job's tasks take the batch lane.
            batch_id=batch_id,
        )
        # The first task only: no JobStateChanged for the creation. Nobody can be watching a
        # job before CreateJob returns its id, and WatchJob starts from a read of the job, so
        # the event would be published, stored and expired unread (a publish, an ack and an
        # outbox row per job).
        out = Outbox()
        out.task(job, 0)
        try:
            await self.repo.insert(job, out, webhook.secret if webhook else None)
        except asyncpg.UniqueViolationError:
            # A retry, or a concurrent request with the same key that won the race.
            existing = await self._by_key(tenant_id, idempotency_key, req_hash)
            if existing is None:
                raise
            return existing, False
        metrics.JOBS_CREATED().inc()
        return mapping.job_proto(job), True

    async def _by_key(self, tenant_id: str, key: str, req_hash: str) -> job_pb2.Job | None:
        job = await self.repo.find_by_key(tenant_id, key)
        if job is None:
            return None
        if job.request_hash != req_hash:
            raise errors.idempotency_mismatch()
        return mapping.job_proto(job)

    async def get_job(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        return mapping.job_proto(await self.repo.get(tenant_id, job_id))

    async def list_jobs(
        self, tenant_id: str, page_size: int, page_token: str, state: int
    ) -> tuple[list[job_pb2.Job], str]:
        if page_size > MAX_PAGE_SIZE:
            raise invalid("page_size", f"at most {MAX_PAGE_SIZE}")
        state_name = job_pb2.Job.State.Name(state) if state else None  # type: ignore[arg-type]
        records, token = await self.repo.list(
            tenant_id, page_size or DEFAULT_PAGE_SIZE, page_token, state_name
        )
        return [mapping.job_proto(r) for r in records], token

    async def get_output(
        self, tenant_id: str, job_id: str, index: int
    ) -> tuple[job_pb2.Output, str]:
        """Output `index` of a succeeded job and its object key."""
        job = await self.repo.get(tenant_id, job_id)
        outputs = mapping.outputs(job)
        if index >= len(outputs):
            if job.state == sm.SUCCEEDED:
                raise errors.output_not_found(job_id, index)
            raise errors.output_not_ready(job_id, job.state)
        return outputs[index]

    async def watch_job(self, tenant_id: str, job_id: str) -> AsyncIterator[job_pb2.Job]:
        # Subscribe before the first read so no change can slip between the two.
        async with self.bus.subscribe(busmod.job_event_subject(job_id)) as messages:
            job = await self.get_job(tenant_id, job_id)
            yield job
            last = job.updated_at.ToNanoseconds()
            it = aiter(messages)
            while job.state not in _TERMINAL:
                try:
                    async with asyncio.timeout(WATCH_RESYNC_S):
                        msg = await anext(it)
                    job = events_pb2.JobStateChanged.FromString(msg.data).job
                except TimeoutError:
                    job = await self.get_job(tenant_id, job_id)
                stamp = job.updated_at.ToNanoseconds()
                if stamp > last or job.state in _TERMINAL:
                    last = stamp
                    yield job

    # ---- transitions: lock the job, apply a rule, save it with its messages ----------------

    async def cancel_job(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        async with self.repo.transaction() as conn:
            job, now = await self.repo.lock(conn, job_id, tenant_id)
            if job is None:
                raise errors.job_not_found(job_id)
            if job.state == sm.CANCELLED:
                # A retried cancel (its first reply lost) answers like the first one did.
                return mapping.job_proto(job)
            if job.state in sm.TERMINAL:
                raise errors.job_finished(job_id, job.state)
            sm.finish(job, sm.CANCELLED, "CANCELLED", "CANCELLED", "cancelled by the caller", now)
            return await self._save(conn, job, Outbox())

    async def apply_event(self, event: events_pb2.TaskEvent) -> None:
        """Apply a worker's event exactly once; duplicates and late events are no-ops.

        Without a lock or a transaction (services/jobs/repository.py): read the job with its
        version, apply the rule, save if the job is still at that version (the event id is
        recorded in the same statement); when another change came first (another event of the
        job, a cancel, on any replica), nothing was written: read again and apply to what it
        wrote. Each lost race means another change committed, so the loop ends."""
        kind = event.WhichOneof("outcome")
        async with db.connection(self.repo.pool) as conn:
            while True:
                job, now, version = await self.repo.read_for_event(
                    conn, event.job_id, event.event_id
                )
                # A duplicate, an unknown job, or a late event for a cancelled/failed job.
                if job is None or job.state in sm.TERMINAL:
                    return
                idx = event.stage_index
                if kind is None or idx >= len(job.stages):
                    return
                out = Outbox()
                if kind == "started":
                    sm.start_stage(job, idx, event.started.attempt, now)
                elif kind == "completed":
                    done = mapping.completion(event.completed)
                    nxt = sm.complete_stage(job, idx, done, mapping.source_key(job), now)
                    if nxt is not None:
                        out.task(job, nxt)
                else:
                    err = event.failed.error
                    sm.fail_stage(
                        job, idx, event.failed.attempts, err.code, err.reason, err.message, now
                    )
                out.job_event(job)
                if await self.repo.save(conn, job, out, version=version, event_id=event.event_id):
                    metrics.JOBS_EVENTS_APPLIED().inc()
                    return

    async def retry_failed(self, job_id: str) -> job_pb2.Job:
        """Run a FAILED job again from its failed stage (operators replaying a dead letter)."""
        async with self.repo.transaction() as conn:
            job, now = await self.repo.lock(conn, job_id)
            if job is None:
                raise errors.job_not_found(job_id)
            if job.state != sm.FAILED:
                raise errors.job_not_failed(job_id, job.state)
            idx = sm.restart_failed(job, now, now + self.repo.job_timeout)
            out = Outbox()
            # A replay gets a new task id: the first run's is spent in JetStream's dedup window
            # and in the events already applied. Unique without counting earlier tasks (the
            # outbox keeps no published rows to count).
            out.task(job, idx, suffix=f".retry{uuid.uuid4().hex[:12]}")
            return await self._save(conn, job, out)

    async def expire_overdue(self) -> int:
        """Fail open jobs whose deadline passed (a worker died for good, a queue stalled)."""
        async with self.repo.transaction() as conn:
            jobs, now = await self.repo.lock_overdue(conn)
            for job in jobs:
                sm.finish(
                    job,
                    sm.FAILED,
                    "DEADLINE_EXCEEDED",
                    "DEADLINE_EXCEEDED",
                    "the job did not finish before its deadline",
                    now,
                )
                await self._save(conn, job, Outbox())
            return len(jobs)

    async def _save(self, conn: asyncpg.Connection, job: sm.JobRecord, out: Outbox) -> job_pb2.Job:
        """Save the change with `out`'s messages and, last, its JobStateChanged; returns the
        job as announced."""
        announced = out.job_event(job)
        await self.repo.save(conn, job, out)
        return announced

    # ---- background loops -----------------------------------------------------------------

    async def deliver_webhooks(self, stop: asyncio.Event, poll_s: float = 1.0) -> None:
        """POST the webhooks of jobs that ended, retrying failures with backoff; woken by the
        NOTIFY of a job that ends, with a poll for retries that come due."""
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:

            async def round_() -> bool:
                return await self.deliver_due_webhooks(client) >= WEBHOOK_BATCH

            await db.run_when_notified(
                self.repo.pool,
                WEBHOOK_CHANNEL,
                stop,
                round_,
                poll_s=poll_s,
                what="webhook delivery",
            )

    async def deliver_due_webhooks(self, client: httpx.AsyncClient) -> int:
        """One round: claim due deliveries and attempt them concurrently; how many."""
        policy = self.webhook_policy
        # The idle polling is not traced; each attempt is (its own span).
        with suppress_instrumentation():
            claimed = await self.webhook_store.claim(WEBHOOK_BATCH, policy.timeout_s + 30.0)
        results = await asyncio.gather(
            *(self._deliver(client, d) for d in claimed), return_exceptions=True
        )
        for d, result in zip(claimed, results, strict=True):
            # Its lease ends and the attempt is made again.
            if isinstance(result, BaseException):
                log.error(
                    "webhook attempt not recorded",
                    extra={"job_id": d.job_id, "attempt": d.attempt},
                    exc_info=result,
                )
        return len(claimed)

    async def _deliver(self, client: httpx.AsyncClient, d: WebhookDelivery) -> None:
        policy = self.webhook_policy
        with _tracer.start_as_current_span(
            "webhook delivery",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "pixmesh.job_id": d.job_id,
                "pixmesh.webhook.attempt": d.attempt,
                "pixmesh.event_id": d.event_id,
                "http.request.method": "POST",
                "url.full": d.url,
            },
        ) as span:
            try:
                job = await self.get_job(d.tenant_id, d.job_id)
            except Exception:
                log.exception("webhook: job unreadable", extra={"job_id": d.job_id})
                return  # the lease ends and the attempt is made again
            body = webhooks.payload(d.event_id, job)
            hdrs = webhooks.headers(d.event_id, body, d.secret or policy.secret)
            refused, address = await webhooks.checked_address(d.url, policy.allow_private)
            if refused is None:
                status, error = await webhooks.post(
                    client, d.url, body, hdrs, policy.timeout_s, address
                )
            else:
                status, error = None, refused
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            retry_in: float | None = None
            if error is not None:
                span.set_status(trace.Status(trace.StatusCode.ERROR, error))
                if d.attempt < policy.max_attempts:
                    retry_in = webhooks.backoff_s(d.attempt, policy.backoff_s, policy.backoff_max_s)
            state = await self.webhook_store.record(d.job_id, d.attempt, error, retry_in)
            span.set_attribute("pixmesh.webhook.state", state or "STALE")
            if state in _WEBHOOK_OUTCOMES:
                metrics.WEBHOOK_ATTEMPTS(_WEBHOOK_OUTCOMES[state]).inc()
            if state == "FAILED":
                log.warning(
                    "webhook failed for good",
                    extra={"job_id": d.job_id, "attempts": d.attempt, "error": error},
                )

    async def reap_overdue(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                with suppress_instrumentation():
                    n = await self.expire_overdue()
                if n:
                    log.warning("failed overdue jobs", extra={"count": n})
            except (asyncpg.PostgresError, OSError):
                log.exception("reaper failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def trim_retention(
        self, stop: asyncio.Event, *, interval_s: float, processed_events_s: float
    ) -> None:
        """Delete what is past its retention (README, "Retention"): processed-event ids older
        than the redelivery horizon. Every replica runs it; rows are claimed SKIP LOCKED, so
        each goes once. Batches until a round finds less than a batch due."""
        while not stop.is_set():
            try:
                with suppress_instrumentation():
                    while True:
                        n = await self.repo.trim_processed_events(processed_events_s, TRIM_BATCH)
                        if n:
                            metrics.RETENTION_REMOVED("processed_events").inc(n)
                        if n < TRIM_BATCH:
                            break
            except (asyncpg.PostgresError, OSError):
                log.exception("retention trim failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


# A recorded attempt's outcome (pixmesh_webhook_attempts_total) by the delivery's new state.
_WEBHOOK_OUTCOMES = {"DELIVERED": "delivered", "PENDING": "retry", "FAILED": "failed"}
