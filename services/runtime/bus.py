"""The JetStream bus: streams, durable consumers, a tracing publisher and the consumer loop.

Delivery is at-least-once. A handler either returns (ack), raises a retryable ServiceError
(nak with a delay from our own backoff table; the consumer BackOff setting is not used because
it rewrites AckWait) or a permanent one (term, after `on_give_up` has recorded it). Long work is
kept alive with in_progress() every ack_wait/3. A task delivered more than `max_deliver` times
(for example because it keeps killing the worker) is given up before it is processed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import nats
import nats.js.errors
import tenacity
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from services.runtime import metrics
from services.runtime.errors import Internal, ServiceError
from services.runtime.lanes import LANE
from services.runtime.settings import ServiceSettings, WorkerSettings
from services.runtime.telemetry import extract_context, inject_headers

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

TASKS_STREAM = "PIXMESH_TASKS"
EVENTS_STREAM = "PIXMESH_EVENTS"
DLQ_STREAM = "PIXMESH_DLQ"

DAY = 24 * 3600.0


def _stream(
    name: str,
    subject: str,
    retention: js_api.RetentionPolicy,
    max_age: float,
    *,
    allow_msg_ttl: bool = False,
) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=name,
        subjects=[subject],
        retention=retention,
        storage=js_api.StorageType.FILE,
        # Explicit: the server stores its default (2 min) for an unset window, and comparing
        # that with 0 at every start would update the stream each time.
        duplicate_window=120.0,
        max_age=max_age,
        max_bytes=-1,
        allow_msg_ttl=allow_msg_ttl,
    )


# Retention (README, "Retention"): tasks leave PIXMESH_TASKS when acked (work queue); the limits
# of PIXMESH_EVENTS come from settings (`EventRetention`, applied by `Bus.stream_config`).
STREAMS: Mapping[str, js_api.StreamConfig] = {
    TASKS_STREAM: _stream(
        TASKS_STREAM, "pixmesh.task.>", js_api.RetentionPolicy.WORK_QUEUE, 7 * DAY
    ),
    # Job events carry a Nats-TTL header (`Bus.expiry_headers`).
    EVENTS_STREAM: _stream(
        EVENTS_STREAM, "pixmesh.event.>", js_api.RetentionPolicy.LIMITS, DAY, allow_msg_ttl=True
    ),
    DLQ_STREAM: _stream(DLQ_STREAM, "pixmesh.dlq.>", js_api.RetentionPolicy.LIMITS, 30 * DAY),
}


@dataclass(frozen=True)
class EventRetention:
    """What PIXMESH_EVENTS keeps. Its durable consumers (jobs' task events, metadata's uploads)
    read within seconds, so `max_age_s`/`max_bytes` only bound a backlog kept for an outage.
    Job events (`pixmesh.event.job.<id>`, one subject per job) are read live only (WatchJob
    subscribes before it reads the job), so each one expires after `job_event_ttl_s` and its
    subject with it. No per-subject cap: the task-event subjects are queues shared by every
    job, and a cap there would drop events a consumer has not read."""

    max_age_s: float = DAY
    max_bytes: int = 1024**3
    job_event_ttl_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> EventRetention:
        return cls(
            max_age_s=settings.events_max_age_s,
            max_bytes=settings.events_max_bytes,
            job_event_ttl_s=settings.job_event_ttl_s,
        )


# Seconds before redelivering a task after a retryable failure, indexed by attempt - 1.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0)


def redelivery_horizon_s(
    ack_wait_s: float, max_deliver: int, retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS
) -> float:
    """The longest a `Consumer` keeps delivering one message after its first delivery: each
    of its `max_deliver` + 1 server-side deliveries (see Consumer.setup) may wait out the ack
    timer, and each retry its nak delay. A message is never delivered again after this."""
    delays = retry_delays or DEFAULT_RETRY_DELAYS
    naks = sum(delays[min(a - 1, len(delays) - 1)] for a in range(1, max_deliver))
    return (max_deliver + 1) * ack_wait_s + naks


def task_subject(service: str, lane: str = "") -> str:
    """The subject of a worker service's tasks; a lane's (services/runtime/lanes.py) below it."""
    return f"pixmesh.task.{service}.{lane}" if lane else f"pixmesh.task.{service}"


def task_durable(service: str, lane: str = "") -> str:
    """The durable consumer a worker service pulls its tasks (of `lane`) from, on TASKS_STREAM."""
    return f"{service}-{lane}-tasks" if lane else f"{service}-tasks"


def dlq_subject(service: str) -> str:
    return f"pixmesh.dlq.{service}"


def job_event_subject(job_id: str) -> str:
    return f"pixmesh.event.job.{job_id}"


_JOB_EVENT_PREFIX = job_event_subject("")


# Published by the gateway after each upload; the metadata service extracts on it.
IMAGE_UPLOADED_SUBJECT = "pixmesh.event.image.uploaded"


def task_event_subject(kind: str) -> str:
    return f"pixmesh.event.task.{kind}"


@dataclass(frozen=True)
class Delivery:
    subject: str
    data: bytes
    headers: Mapping[str, str]
    # 1 on the first delivery.
    attempt: int


Handler = Callable[[Delivery], Awaitable[None]]
GiveUp = Callable[[Delivery, ServiceError], Awaitable[None]]


# Consumer settings a running consumer can be updated to; any other difference means recreating
# it (the server refuses to change, e.g., the filter subject or ack policy of a durable in place).
_EDITABLE_CONSUMER_FIELDS = ("ack_wait", "max_deliver", "max_ack_pending")
_FIXED_CONSUMER_FIELDS = ("filter_subject", "ack_policy", "deliver_policy")
# Stream settings reconciled at start (replicas among them: R1 -> R3 when a cluster is formed).
_RECONCILED_STREAM_FIELDS = (
    "num_replicas",
    "max_age",
    "duplicate_window",
    "subjects",
    "max_bytes",
    # Can be turned on in place, never off (the server refuses).
    "allow_msg_ttl",
)


@dataclass(frozen=True)
class QueueStats:
    """What an operator (and KEDA) reads of one durable consumer."""

    stream: str
    consumer: str
    # Not yet delivered: the lag KEDA scales on.
    pending: int
    # Delivered, not yet acked (in progress on some replica).
    ack_pending: int
    redelivered: int
    # Pull requests waiting for work: 0 with pending > 0 means no worker is attached.
    waiting: int
    # Age of the oldest task still in the stream for this consumer (None when there is none).
    oldest_age_s: float | None


# Stream and consumer set-up when a fleet starts: on a fresh cluster the first requests can time
# out while the streams' Raft groups form (two replicas creating the streams at once both waited
# 5 s and failed). They are idempotent, so they are retried for a minute before start-up fails.
_STARTUP_RETRY = tenacity.retry(
    retry=tenacity.retry_if_exception_type(TimeoutError),
    wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=5.0),
    stop=tenacity.stop_after_delay(60.0),
    before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
    reraise=True,
)


class Bus:
    def __init__(
        self,
        nc: NatsClient,
        *,
        stream_replicas: int = 1,
        events: EventRetention = EventRetention(),
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stream_replicas = stream_replicas
        self.events = events
        # Set by ensure_streams once the events stream is known to accept Nats-TTL (a server
        # refuses a message with that header otherwise).
        self._job_event_ttl = False

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        stream_replicas: int = 1,
        events: EventRetention = EventRetention(),
    ) -> Bus:
        """Connect to one server or a cluster (`url` lists the nodes, comma separated; the client
        also learns the others from the cluster and fails over between them)."""

        async def on_disconnect() -> None:
            log.warning("nats disconnected")

        async def on_reconnect() -> None:
            log.info("nats reconnected")

        async def on_error(exc: Exception) -> None:
            log.warning("nats error: %s", exc)

        nc = await nats.connect(
            servers=[u.strip() for u in url.split(",") if u.strip()],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            error_cb=on_error,
        )
        return cls(nc, stream_replicas=stream_replicas, events=events)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.drain()

    def stream_config(self, name: str) -> js_api.StreamConfig:
        """The pixmesh stream `name` as this process wants it (replicas and the events
        stream's limits from settings)."""
        config = STREAMS[name].evolve(num_replicas=self.stream_replicas)
        if name == EVENTS_STREAM:
            config = config.evolve(max_age=self.events.max_age_s, max_bytes=self.events.max_bytes)
        return config

    def expiry_headers(self, subject: str) -> dict[str, str]:
        """Headers that give a message on `subject` its time to live: a job event's (none for
        other subjects, nor until ensure_streams has seen that the stream accepts them)."""
        if not self._job_event_ttl or not subject.startswith(_JOB_EVENT_PREFIX):
            return {}
        return {"Nats-TTL": str(math.ceil(self.events.job_event_ttl_s))}

    @_STARTUP_RETRY
    async def ensure_streams(self) -> None:
        """Create the pixmesh streams if missing; bring existing ones to our settings.

        Replicas, max age and bytes, dedup window, subjects and per-message TTL are updated in
        place (NATS allows it; a cluster moves the data). A stream whose update the server refuses is left as it is and
        logged: the service still runs against it rather than refusing to start.
        """
        for name in STREAMS:
            wanted = self.stream_config(name)
            try:
                info = await self.js.stream_info(name)
            except NotFoundError:
                await self.js.add_stream(wanted)
                log.info("created stream", extra={"stream": name, "replicas": wanted.num_replicas})
                self._job_event_ttl |= name == EVENTS_STREAM
                continue
            if name == EVENTS_STREAM and info.config.allow_msg_ttl:
                self._job_event_ttl = True
            changed = {
                f: (getattr(info.config, f), getattr(wanted, f))
                for f in _RECONCILED_STREAM_FIELDS
                if getattr(info.config, f) != getattr(wanted, f)
            }
            if not changed:
                continue
            try:
                await self.js.update_stream(
                    info.config.evolve(**{f: new for f, (_, new) in changed.items()})
                )
            except nats.js.errors.APIError as exc:
                log.error(
                    "could not update stream",
                    extra={"stream": name, "changes": str(changed), "error": str(exc)},
                )
            else:
                log.warning("updated stream", extra={"stream": name, "changes": str(changed)})
                self._job_event_ttl |= name == EVENTS_STREAM

    @_STARTUP_RETRY
    async def ensure_consumer(
        self,
        stream: str,
        durable: str,
        subject: str,
        *,
        ack_wait: float,
        max_deliver: int,
        max_ack_pending: int,
    ) -> None:
        """Create the durable consumer, or reconcile a running one with these settings.

        Every replica of a service calls this at start with the fleet's settings, so a changed
        `ack_wait`/`max_deliver`/`max_ack_pending` takes effect with the next start. Those are
        updated in place; a consumer whose fixed settings differ (filter subject, ack or deliver
        policy) is deleted and created again: tasks stay in the work-queue stream, and any that
        were in flight are delivered again (handlers are idempotent).
        """
        wanted = js_api.ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        )
        try:
            info = await self.js.consumer_info(stream, durable)
        except NotFoundError:
            await self.js.add_consumer(stream, wanted)
            log.info("created consumer", extra={"stream": stream, "durable": durable})
            return
        fixed = [f for f in _FIXED_CONSUMER_FIELDS if getattr(info.config, f) != getattr(wanted, f)]
        if fixed:
            log.warning(
                "recreating consumer: settings that cannot be updated differ",
                extra={"stream": stream, "durable": durable, "fields": fixed},
            )
            with contextlib.suppress(NotFoundError):
                await self.js.delete_consumer(stream, durable)
            await self.js.add_consumer(stream, wanted)
            return
        changed = {
            f: (getattr(info.config, f), getattr(wanted, f))
            for f in _EDITABLE_CONSUMER_FIELDS
            if not _same(getattr(info.config, f), getattr(wanted, f))
        }
        if changed:
            # add_consumer on an existing durable is an update in nats-py.
            await self.js.add_consumer(
                stream, info.config.evolve(**{f: v for f, (_, v) in changed.items()})
            )
            log.warning(
                "updated consumer",
                extra={"stream": stream, "durable": durable, "changes": str(changed)},
            )

    async def queue_stats(
        self, durable: str, subject: str, *, stream: str = TASKS_STREAM, timeout: float = 1.0
    ) -> QueueStats:
        """Lag, in-flight work and the oldest task of one durable consumer."""
        info = await self.js.consumer_info(stream, durable, timeout=timeout)
        oldest: float | None = None
        pending = int(info.num_pending or 0)
        ack_pending = int(info.num_ack_pending or 0)
        if pending + ack_pending:
            # The first message on the subject above the ack floor is the oldest not yet done
            # (in a work-queue stream acked tasks are gone; an events stream keeps them, so
            # starting from 1 there would find the oldest message retained, days old).
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            with contextlib.suppress(NotFoundError, TimeoutError):
                first = await self.js.get_msg(stream, seq=floor + 1, next=True, subject=subject)
                if first.time is not None:
                    oldest = max(0.0, time.time() - first.time.timestamp())
        return QueueStats(
            stream=stream,
            consumer=durable,
            pending=pending,
            ack_pending=ack_pending,
            redelivered=int(info.num_redelivered or 0),
            waiting=int(info.num_waiting or 0),
            oldest_age_s=oldest,
        )

    async def consumer_depth(
        self, durable: str, *, stream: str = TASKS_STREAM, timeout: float = 1.0
    ) -> int:
        """Messages a durable consumer still has to deliver plus those delivered but not acked."""
        info = await self.js.consumer_info(stream, durable, timeout=timeout)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def publish(
        self,
        subject: str,
        message: Message,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Publish to JetStream, in a producer span, and wait for the stream's ack. `msg_id`
        enables dedup."""
        with _tracer.start_as_current_span(
            f"publish {subject}",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            await self.publish_raw(
                subject,
                message.SerializeToString(),
                msg_id=msg_id,
                headers=headers,
                timeout=timeout,
            )

    async def publish_raw(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        inject_trace: bool = True,
        timeout: float = 5.0,
    ) -> None:
        """Publish an already-serialised message with the standard headers and wait for the
        stream's ack: `headers`, then the current trace context (`inject_trace` False: the
        message carries the context it was written in, e.g. an outbox row), a job event's time
        to live and `Nats-Msg-Id` = `msg_id` (dedup). No span of its own."""
        hdrs: dict[str, str] = dict(headers or {})
        if inject_trace:
            inject_headers(hdrs)
        hdrs.update(self.expiry_headers(subject))
        if msg_id:
            hdrs["Nats-Msg-Id"] = msg_id
        await self.js.publish(subject, payload, headers=hdrs, timeout=timeout)

    @contextlib.asynccontextmanager
    async def subscribe(self, subject: str) -> AsyncIterator[AsyncIterator[Msg]]:
        """A plain (non-durable) subscription, e.g. to follow one job's events live."""
        sub = await self.nc.subscribe(subject)
        try:
            yield sub.messages
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class ConsumerLimits(TypedDict):
    """The deployment's consumer settings, as Consumer's keyword arguments."""

    concurrency: int
    ack_wait: float
    max_deliver: int
    max_ack_pending: int


def consumer_limits(settings: WorkerSettings) -> ConsumerLimits:
    """PIXMESH_CONCURRENCY, _ACK_WAIT_S, _MAX_DELIVER and _MAX_ACK_PENDING for a Consumer:
    `Consumer(bus, stream=..., ..., **consumer_limits(settings))`."""
    return ConsumerLimits(
        concurrency=settings.concurrency,
        ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
    )


class Consumer:
    """Pulls from a durable consumer and runs `handler` with bounded concurrency."""

    def __init__(
        self,
        bus: Bus,
        *,
        stream: str,
        durable: str,
        subject: str,
        handler: Handler,
        on_give_up: GiveUp,
        concurrency: int,
        ack_wait: float,
        max_deliver: int,
        max_ack_pending: int,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        count_tasks: bool = False,
        lanes: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """`concurrency` is this process's share; `max_ack_pending` the whole fleet's ceiling.
        `count_tasks`: the messages are tasks (PIXMESH_TASKS), counted in pixmesh_tasks_*.
        `lanes`: more durables pulled the same way, each with `concurrency` of its own, by lane
        name: (durable, subject); their handler runs with LANE set to the name."""
        self.bus = bus
        self.stream = stream
        self.durable = durable
        self.subject = subject
        self.handler = handler
        self.on_give_up = on_give_up
        self.concurrency = concurrency
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.max_ack_pending = max_ack_pending
        self.retry_delays = tuple(retry_delays) or DEFAULT_RETRY_DELAYS
        self.count_tasks = count_tasks
        self.lanes = dict(lanes or {})

    async def setup(self) -> None:
        # One extra server-side delivery lets us see (and dead-letter) a task that crashed the
        # worker on every one of its max_deliver tries, instead of JetStream dropping it silently.
        for durable, subject in [(self.durable, self.subject), *self.lanes.values()]:
            await self.bus.ensure_consumer(
                self.stream,
                durable,
                subject,
                ack_wait=self.ack_wait,
                max_deliver=self.max_deliver + 1,
                max_ack_pending=self.max_ack_pending,
            )

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(
            self._pull(self.durable, "", stop),
            *(self._pull(durable, lane, stop) for lane, (durable, _) in self.lanes.items()),
        )

    async def _pull(self, durable: str, lane: str, stop: asyncio.Event) -> None:
        LANE.set(lane)  # this loop's own context, copied into each handler task
        inflight: set[asyncio.Task[None]] = set()
        psub: JetStreamContext.PullSubscription | None = None
        while not stop.is_set():
            if len(inflight) >= self.concurrency:
                await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                if psub is None:
                    psub = await self.bus.js.pull_subscribe_bind(durable, self.stream)
                msgs = await psub.fetch(self.concurrency - len(inflight), timeout=1.0)
            except TimeoutError:
                continue
            except Exception as exc:  # connection loss, consumer gone after a server restart
                log.warning("fetch failed, re-binding: %s", exc)
                psub = None
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self.setup()
                continue
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        if inflight:
            log.info("finishing in-flight tasks", extra={"count": len(inflight)})
            await asyncio.gather(*inflight, return_exceptions=True)
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(
            subject=msg.subject,
            data=msg.data,
            headers=dict(msg.headers or {}),
            attempt=meta.num_delivered,
        )
        if self.count_tasks:
            metrics.TASKS_RECEIVED().inc()
            if delivery.attempt == 1:
                # The stream's timestamp of the message: when the task was published. Later
                # deliveries would add the retry delays, so only the first one is observed.
                waited = time.time() - meta.timestamp.timestamp()
                metrics.TASK_QUEUE_WAIT().observe(max(0.0, waited))
        ctx = extract_context(delivery.headers)
        with _tracer.start_as_current_span(
            f"process {msg.subject}",
            context=ctx,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.message.delivery_count": delivery.attempt,
            },
        ) as span:
            heartbeat = asyncio.create_task(self._heartbeat(msg))
            try:
                if delivery.attempt > self.max_deliver:
                    raise Internal(
                        message=f"gave up after {self.max_deliver} deliveries",
                        reason="MAX_DELIVERIES",
                        retryable=False,
                    )
                await self.handler(delivery)
            except ServiceError as err:
                span.set_attribute("pixmesh.error.reason", err.reason)
                await self._settle_failure(msg, delivery, err)
            except Exception as exc:
                log.exception("handler crashed", extra={"subject": msg.subject})
                span.record_exception(exc)
                await self._settle_failure(msg, delivery, Internal())
            else:
                await msg.ack()
                if self.count_tasks:
                    metrics.TASKS_SUCCEEDED().inc()
            finally:
                heartbeat.cancel()

    async def _settle_failure(self, msg: Msg, delivery: Delivery, err: ServiceError) -> None:
        if self.count_tasks:
            metrics.TASKS_FAILED(err.reason).inc()
        if err.retryable and delivery.attempt < self.max_deliver:
            delay = self.retry_delays[min(delivery.attempt - 1, len(self.retry_delays) - 1)]
            log.info(
                "task failed, will retry",
                extra={"reason": err.reason, "attempt": delivery.attempt, "delay_s": delay},
            )
            await msg.nak(delay=delay)
            if self.count_tasks:
                metrics.TASKS_RETRIED(err.reason).inc()
            return
        try:
            await self.on_give_up(delivery, err)
        except Exception:
            # Could not record the failure: leave the message for redelivery.
            log.exception("could not record a failed task; it will be redelivered")
            await msg.nak(delay=self.retry_delays[0])
            if self.count_tasks:
                metrics.TASKS_RETRIED(err.reason).inc()
            return
        await msg.term()
        if self.count_tasks:
            metrics.TASKS_DEAD_LETTERED(err.reason).inc()

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()


def _same(a: object, b: object) -> bool:
    # Durations come back from the server as floats that went through nanoseconds.
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-3  # type: ignore[arg-type]
    return a == b
