"""The job registry's logic: create/read/cancel jobs, apply worker events, watch jobs live,
relay the outbox to JetStream and fail jobs that outlive their deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import webhooks
from services.jobs.repository import (
    OUTBOX_CHANNEL,
    WEBHOOK_CHANNEL,
    JobsRepository,
    WebhookDelivery,
)
from services.runtime import bus as busmod
from services.runtime import metrics
from services.runtime.bus import Bus
from services.runtime.errors import invalid
from services.runtime.pipeline import check_renditions, op_name, request_hash
from services.runtime.telemetry import extract_context, inject_headers

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
# WatchJob re-reads the job this often even without events, so a missed event costs latency,
# never correctness.
WATCH_RESYNC_S = 5.0

_TERMINAL = {job_pb2.Job.SUCCEEDED, job_pb2.Job.FAILED, job_pb2.Job.CANCELLED}
# Outbox rows claimed (and published, in order) per relay transaction.
RELAY_BATCH = 100
_TASK_PREFIX = busmod.task_subject("")
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
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.max_renditions = max_renditions
        self.webhook_policy = webhook_policy or webhooks.WebhookPolicy()

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
        return await self.repo.create_job(
            tenant_id, image, ops, idempotency_key, req_hash, renditions, webhook, reuse=reuse
        )

    async def get_job(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        return await self.repo.get(tenant_id, job_id)

    async def list_jobs(
        self, tenant_id: str, page_size: int, page_token: str, state: int
    ) -> tuple[list[job_pb2.Job], str]:
        if page_size > MAX_PAGE_SIZE:
            raise invalid("page_size", f"at most {MAX_PAGE_SIZE}")
        state_name = job_pb2.Job.State.Name(state) if state else None  # type: ignore[arg-type]
        return await self.repo.list(
            tenant_id, page_size or DEFAULT_PAGE_SIZE, page_token, state_name
        )

    async def cancel_job(self, tenant_id: str, job_id: str) -> job_pb2.Job:
        return await self.repo.cancel(tenant_id, job_id)

    async def get_output(
        self, tenant_id: str, job_id: str, index: int
    ) -> tuple[job_pb2.Output, str]:
        return await self.repo.output(tenant_id, job_id, index)

    async def watch_job(self, tenant_id: str, job_id: str) -> AsyncIterator[job_pb2.Job]:
        # Subscribe before the first read so no change can slip between the two.
        async with self.bus.subscribe(busmod.job_event_subject(job_id)) as messages:
            job = await self.repo.get(tenant_id, job_id)
            yield job
            last = job.updated_at.ToNanoseconds()
            it = aiter(messages)
            while job.state not in _TERMINAL:
                try:
                    async with asyncio.timeout(WATCH_RESYNC_S):
                        msg = await anext(it)
                    job = events_pb2.JobStateChanged.FromString(msg.data).job
                except TimeoutError:
                    job = await self.repo.get(tenant_id, job_id)
                stamp = job.updated_at.ToNanoseconds()
                if stamp > last or job.state in _TERMINAL:
                    last = stamp
                    yield job

    async def apply_event(self, event: events_pb2.TaskEvent) -> None:
        await self.repo.apply_event(event)

    # ---- background loops -----------------------------------------------------------------

    async def relay_outbox(self, stop: asyncio.Event) -> None:
        """Publish outbox rows in order; woken by NOTIFY, with a 1 s poll as the safety net."""
        wake = asyncio.Event()
        listener = await self.repo.pool.acquire()

        def on_notify(*_: object) -> None:
            wake.set()

        await listener.add_listener(OUTBOX_CHANNEL, on_notify)
        # Stopping wakes the loop too, which then waits on `wake` alone.
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: wake.set())
        try:
            while not stop.is_set():
                # Cleared before the claim: a NOTIFY after this point may announce rows the
                # claim did not see, and then the loop goes round again instead of waiting.
                # (Rows announced before it were committed before the claim began.)
                wake.clear()
                try:
                    published = await self._relay_batch()
                except Exception:
                    log.exception("outbox relay failed; retrying")
                    await asyncio.sleep(1.0)
                    continue
                if published >= RELAY_BATCH or wake.is_set():
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await wake.wait()
        finally:
            stopping.cancel()
            with contextlib.suppress(Exception):
                await listener.remove_listener(OUTBOX_CHANNEL, on_notify)
            await self.repo.pool.release(listener)

    async def _relay_batch(self) -> int:
        # The idle polling is not traced (it would be a one-span trace every second); each
        # published message is, as a child of the request that wrote it.
        with suppress_instrumentation():
            return await self._relay_claimed()

    async def _relay_claimed(self) -> int:
        async with self.repo.pool.acquire() as conn, conn.transaction():
            # Marked published now, for good only when the transaction commits after them all.
            batch = await self.repo.claim_outbox(conn, RELAY_BATCH)
            for m in batch:
                if not m.subject.startswith(_TASK_PREFIX):
                    # A job event ends its trace (watchers only read it): no span of its own,
                    # the writer's trace context travels as it was stored.
                    await self.bus.js.publish(
                        m.subject,
                        m.payload,
                        headers={
                            **m.headers,
                            **self.bus.expiry_headers(m.subject),
                            "Nats-Msg-Id": m.msg_id,
                        },
                        timeout=5.0,
                    )
                    continue
                # A task continues the trace of the request that wrote the row, through here.
                with _tracer.start_as_current_span(
                    "outbox relay", context=extract_context(m.headers)
                ):
                    await self.bus.js.publish(
                        m.subject,
                        m.payload,
                        headers={**_trace_headers(), "Nats-Msg-Id": m.msg_id},
                        timeout=5.0,
                    )
            return len(batch)

    async def deliver_webhooks(self, stop: asyncio.Event, poll_s: float = 1.0) -> None:
        """POST the webhooks of jobs that ended, retrying failures with backoff; woken by the
        NOTIFY of a job that ends, with a poll for retries that come due."""
        wake = asyncio.Event()
        listener = await self.repo.pool.acquire()

        def on_notify(*_: object) -> None:
            wake.set()

        await listener.add_listener(WEBHOOK_CHANNEL, on_notify)
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: wake.set())
        client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    sent = await self.deliver_due_webhooks(client)
                except Exception:
                    log.exception("webhook delivery failed; retrying")
                    await asyncio.sleep(poll_s)
                    continue
                if sent >= WEBHOOK_BATCH or wake.is_set():
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_s):
                        await wake.wait()
        finally:
            stopping.cancel()
            await client.aclose()
            with contextlib.suppress(Exception):
                await listener.remove_listener(WEBHOOK_CHANNEL, on_notify)
            await self.repo.pool.release(listener)

    async def deliver_due_webhooks(self, client: httpx.AsyncClient) -> int:
        """One round: claim due deliveries and attempt them concurrently; how many."""
        policy = self.webhook_policy
        # The idle polling is not traced; each attempt is (its own span).
        with suppress_instrumentation():
            claimed = await self.repo.claim_webhooks(WEBHOOK_BATCH, policy.timeout_s + 30.0)
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
                job = await self.repo.get(d.tenant_id, d.job_id)
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
            state = await self.repo.record_webhook(d.job_id, d.attempt, error, retry_in)
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
                    n = await self.repo.expire_overdue()
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
                    while (
                        await self.repo.trim_processed_events(processed_events_s, TRIM_BATCH)
                        >= TRIM_BATCH
                    ):
                        pass
            except (asyncpg.PostgresError, OSError):
                log.exception("retention trim failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


# A recorded attempt's outcome (pixmesh_webhook_attempts_total) by the delivery's new state.
_WEBHOOK_OUTCOMES = {"DELIVERED": "delivered", "PENDING": "retry", "FAILED": "failed"}


def _trace_headers() -> dict[str, str]:
    return dict(inject_headers({}))
