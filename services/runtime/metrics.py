"""Prometheus metrics of every service: the one place they are defined, and their exposition.

Every family is prefixed `pixmesh_` and has a `service` label (gateway, jobs, imaging, inference,
metadata): the value is set once per process by `configure` (`serve()` calls it through
`start_metrics_server`), and code that records a value only names the other labels:

    metrics.TASKS_FAILED(err.reason).inc()
    metrics.TASK_DURATION("resize").observe(seconds)

Calling a family returns its child for this process's service and those labels, cached in a
plain dict (prometheus-client's own `.labels()` takes a lock and builds a key on every call), so
recording costs a dict lookup and an increment. Label values are always bounded sets: method
names, gRPC codes, ServiceError reason codes, operation kinds, formats, queue names. Never ids
or free text.

Also here: the gRPC server and client interceptors (RED per method: requests by code, latency)
and `queue_watcher`, the background loop that copies JetStream consumer and stream state into
gauges. The HTTP server is prometheus-client's own, on a daemon thread, bound to
`metrics_host:metrics_port` (0: no server).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from nats.js.errors import NotFoundError
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from services.runtime.handlers import WrappingInterceptor, rewrap

if TYPE_CHECKING:
    from services.runtime.bus import Bus, Consumer
    from services.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

# Each counter child would also export a `_created` series: twice the series for nothing a
# dashboard reads (rate() does not need it).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

M = TypeVar("M", bound=MetricWrapperBase)

_service = "pixmesh"
_families: list[Family[Any]] = []


class Family(Generic[M]):
    """A metric whose `service` label is this process's: `family(*labels)` is the child."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}
        _families.append(self)

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(_service, *labels)
        return child


def configure(service: str) -> None:
    """Set the `service` label of everything this process records from now on."""
    global _service
    _service = service
    for family in _families:
        family._children.clear()


def service() -> str:
    return _service


def _counter(name: str, doc: str, *labels: str) -> Family[Counter]:
    return Family(Counter(name, doc, ("service", *labels)))


def _gauge(name: str, doc: str, *labels: str) -> Family[Gauge]:
    return Family(Gauge(name, doc, ("service", *labels)))


def _histogram(name: str, doc: str, buckets: Sequence[float], *labels: str) -> Family[Histogram]:
    return Family(Histogram(name, doc, ("service", *labels), buckets=buckets))


# Seconds. RPCs and queue hops are milliseconds; tasks and jobs seconds to minutes.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_WAIT = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

SERVICE_INFO = Family(
    Gauge(
        "pixmesh_service_info",
        "1 per running process; count by service = replicas.",
        ("service", "instance", "version"),
    )
)

# ---- gRPC ----------------------------------------------------------------------------------

GRPC_SERVER_HANDLED = _counter(
    "pixmesh_grpc_server_handled_total",
    "RPCs completed by this server, by final status code.",
    "grpc_service",
    "grpc_method",
    "grpc_code",
)
GRPC_SERVER_SECONDS = _histogram(
    "pixmesh_grpc_server_handling_seconds",
    "Time from an RPC's start to its status (a stream: until it ends).",
    _FAST,
    "grpc_service",
    "grpc_method",
)
GRPC_CLIENT_HANDLED = _counter(
    "pixmesh_grpc_client_handled_total",
    "RPCs this process made to other services, by final status code.",
    "grpc_service",
    "grpc_method",
    "grpc_code",
)
GRPC_CLIENT_SECONDS = _histogram(
    "pixmesh_grpc_client_handling_seconds",
    "Time from an outgoing RPC's start to its status.",
    _FAST,
    "grpc_service",
    "grpc_method",
)

# ---- tasks (the worker side of PIXMESH_TASKS) ---------------------------------------------

TASKS_RECEIVED = _counter(
    "pixmesh_tasks_received_total", "Task deliveries received (redeliveries included)."
)
TASKS_SUCCEEDED = _counter("pixmesh_tasks_succeeded_total", "Task deliveries processed and acked.")
TASKS_FAILED = _counter(
    "pixmesh_tasks_failed_total",
    "Task deliveries whose processing failed (then retried or dead-lettered).",
    "reason",
)
TASKS_RETRIED = _counter(
    "pixmesh_tasks_retried_total", "Failed task deliveries handed back for redelivery.", "reason"
)
TASKS_DEAD_LETTERED = _counter(
    "pixmesh_tasks_dead_lettered_total",
    "Tasks given up (permanent error or out of deliveries): TaskFailed + a DLQ copy.",
    "reason",
)
TASK_DURATION = _histogram(
    "pixmesh_task_duration_seconds",
    "Processing time of a task delivery (download, process, upload, report), any outcome.",
    _SLOW,
    "operation",
)
TASK_QUEUE_WAIT = _histogram(
    "pixmesh_task_queue_wait_seconds",
    "Time from a task's publication to the start of its first delivery.",
    _WAIT,
)

# ---- JetStream state (queue_watcher) -------------------------------------------------------

_CONSUMER = ("stream", "consumer")
CONSUMER_PENDING = _gauge(
    "pixmesh_consumer_pending", "Messages not yet delivered (the lag KEDA scales on).", *_CONSUMER
)
CONSUMER_ACK_PENDING = _gauge(
    "pixmesh_consumer_ack_pending", "Messages delivered, not yet acked (in progress).", *_CONSUMER
)
CONSUMER_REDELIVERED = _gauge(
    "pixmesh_consumer_redelivered", "Messages delivered more than once, not yet acked.", *_CONSUMER
)
CONSUMER_OLDEST_AGE = _gauge(
    "pixmesh_consumer_oldest_pending_age_seconds",
    "Age of the oldest task not yet done (0: none).",
    *_CONSUMER,
)
CONSUMER_WAITING = _gauge(
    "pixmesh_consumer_waiting",
    "Pull requests waiting for messages (0 with pending > 0: no worker attached).",
    *_CONSUMER,
)
STREAM_MESSAGES = _gauge(
    "pixmesh_stream_messages", "Messages in a stream (PIXMESH_DLQ: the dead letters).", "stream"
)

# ---- jobs ----------------------------------------------------------------------------------

JOBS_CREATED = _counter("pixmesh_jobs_created_total", "Jobs created (idempotent replays excluded).")
JOBS_FINISHED = _counter(
    "pixmesh_jobs_finished_total", "Jobs that reached a terminal state.", "state"
)
JOB_DURATION = _histogram(
    "pixmesh_job_duration_seconds",
    "Time from a job's creation to its terminal state.",
    _SLOW,
    "state",
)
JOBS_RUNNING = _gauge("pixmesh_jobs_running", "Jobs in state RUNNING (read from Postgres).")
JOBS_EVENTS_APPLIED = _counter(
    "pixmesh_jobs_events_applied_total",
    "Worker events applied to a job (duplicates and late events excluded).",
)
BATCHES = _gauge(
    "pixmesh_batches", "Batches by state (RUNNING, SUCCEEDED, ...; read from Postgres).", "state"
)
BATCH_IMAGES = _counter(
    "pixmesh_batch_images_total",
    "Images of batches whose job ended, by the image's state: SUCCEEDED, FAILED, CANCELLED.",
    "state",
)
BATCH_BYTES = _counter(
    "pixmesh_batch_bytes_total",
    "Bytes of batches' images whose job ended: in (the sources), out (the outputs).",
    "direction",
)
WEBHOOK_ATTEMPTS = _counter(
    "pixmesh_webhook_attempts_total",
    "Webhook POSTs by outcome: delivered, retry (failed, will be retried), failed (for good).",
    "outcome",
)

# ---- imaging -------------------------------------------------------------------------------

IMAGING_STEP_SECONDS = _histogram(
    "pixmesh_imaging_step_seconds",
    "Pipeline time by step: decode (probe to normalized pixels, by input format), ops (all "
    "operations, by input format), encode (strip and encode of one output, by its format).",
    _FAST,
    "step",
    "format",
)
IMAGING_CHILD_RECYCLES = _counter(
    "pixmesh_imaging_child_recycles_total",
    "Pipeline child processes replaced after max_tasks_per_child tasks.",
)
IMAGING_CHILD_CRASHES = _counter(
    "pixmesh_imaging_child_crashes_total", "Pipeline child processes that died (crash, kill)."
)
IMAGING_MEMORY_KILLS = _counter(
    "pixmesh_imaging_memory_kills_total",
    "Pipelines stopped by the child's memory limit (RLIMIT_AS): IMAGE_TOO_LARGE.",
)

# ---- inference -----------------------------------------------------------------------------

INFERENCE_BATCH_SIZE = _histogram(
    "pixmesh_inference_batch_size", "Tiles per model run.", (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
)
INFERENCE_QUEUE_DELAY = _histogram(
    "pixmesh_inference_queue_delay_seconds",
    "Time a tile waited in the dynamic batcher before its batch ran.",
    (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INFERENCE_TILES = _counter(
    "pixmesh_inference_tiles_total", "Tiles denoised, by model and provider.", "model", "provider"
)
INFERENCE_PROVIDER_INFO = _gauge(
    "pixmesh_inference_provider_info",
    "1 for the onnxruntime execution provider in use.",
    "provider",
)

# ---- metadata and gateway ------------------------------------------------------------------

METADATA_INDEXING_LAG = _histogram(
    "pixmesh_metadata_indexing_lag_seconds",
    "Time from an upload to its metadata row being stored.",
    _SLOW,
)
# What each retention job removed (README, "Retention"): "outbox" rows once JetStream acked them,
# "processed_events" ids past the redelivery horizon, and the tenant retention's "jobs",
# "images" and "objects" (stored sources and outputs). NATS expires stream messages itself
# (pixmesh_stream_messages shows the level).
RETENTION_REMOVED = _counter(
    "pixmesh_retention_removed_total",
    "Rows, messages or objects removed by a retention job, by what they were.",
    "store",
)
GATEWAY_IDEMPOTENCY_HITS = _counter(
    "pixmesh_gateway_idempotency_hits_total",
    "CreateJob calls answered with the job an idempotency key already names.",
)
GATEWAY_BACKPRESSURE_REFUSALS = _counter(
    "pixmesh_gateway_backpressure_refusals_total",
    "CreateJob calls refused with QUEUE_FULL, by the full task queue.",
    "queue",
)


# ---- helpers -------------------------------------------------------------------------------


def job_finished(state: str, seconds: float) -> None:
    """A job reached `state` (SUCCEEDED, FAILED, CANCELLED) `seconds` after its creation."""
    JOBS_FINISHED(state).inc()
    JOB_DURATION(state).observe(max(0.0, seconds))


def imaging_steps(
    timings: Mapping[str, float], source_format: str, outputs: Sequence[tuple[str, str]]
) -> None:
    """Observe one pipeline run's step timings (`pipeline.PipelineResult.timings`, keys such as
    "decode", "op0.resize", "thumb.encode"): everything up to normalized pixels is decode,
    every operation is ops, strip and encode of each output is encode. `outputs` are the
    (timing key prefix, format) of each output: ("", "webp"), or ("thumb.", "jpg"), ...
    """
    decode = ops = 0.0
    encode = dict.fromkeys((prefix for prefix, _ in outputs), 0.0)
    for key, seconds in timings.items():
        prefix, _, step = key.rpartition(".")
        if step in _ENCODE_STEPS:
            prefix = f"{prefix}." if prefix else ""
            if prefix in encode:
                encode[prefix] += seconds
        elif step in _DECODE_STEPS and not prefix:
            decode += seconds
        else:
            ops += seconds
    IMAGING_STEP_SECONDS("decode", source_format).observe(decode)
    IMAGING_STEP_SECONDS("ops", source_format).observe(ops)
    for prefix, fmt in outputs:
        IMAGING_STEP_SECONDS("encode", fmt).observe(encode[prefix])


_DECODE_STEPS = frozenset({"probe", "validate", "decode", "orient", "colour", "normalize"})
_ENCODE_STEPS = frozenset({"strip", "encode"})


# ---- exposition ----------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """prometheus-client's HTTP server on its daemon thread; `stop()` closes the socket."""

    httpd: WSGIServer
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics_server(settings: ServiceSettings) -> MetricsServer | None:
    """Label this process's metrics with its service, set pixmesh_service_info, and serve
    /metrics on `metrics_host:metrics_port` (None when the port is 0: metrics off)."""
    configure(settings.service_name)
    SERVICE_INFO.metric.labels(settings.service_name, instance(), version()).set(1)
    if settings.metrics_port == 0:
        return None
    try:
        httpd, _ = prometheus_client.start_http_server(
            settings.metrics_port, addr=settings.metrics_host
        )
    except OSError as exc:
        raise RuntimeError(
            f"cannot bind the metrics port {settings.metrics_host}:{settings.metrics_port}: {exc}"
        ) from exc
    server = MetricsServer(httpd, settings.metrics_host, httpd.server_port)
    log.info("serving metrics", extra={"url": server.url})
    return server


def instance() -> str:
    """This process among the service's replicas: host name (a pod's name) and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def version() -> str:
    try:
        return importlib.metadata.version("pixmesh")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---- JetStream state -----------------------------------------------------------------------


@dataclass(frozen=True)
class WatchedQueue:
    """A durable consumer whose state `queue_watcher` exports."""

    stream: str
    durable: str
    subject: str

    @classmethod
    def of(cls, consumer: Consumer) -> WatchedQueue:
        return cls(consumer.stream, consumer.durable, consumer.subject)


Refresh = Callable[[], Awaitable[None]]


def queue_watcher(
    bus: Bus,
    queues: Sequence[WatchedQueue],
    *,
    streams: Sequence[str] = (),
    refreshers: Sequence[Refresh] = (),
    interval_s: float = 5.0,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background worker (runtime.server.Worker) that refreshes the pixmesh_consumer_* gauges
    of `queues`, pixmesh_stream_messages of `streams`, and runs `refreshers` (other gauges read
    from elsewhere, e.g. Postgres) every `interval_s` until stopped. A failed read is logged
    and the gauge keeps its last value: a NATS hiccup never stops the loop."""

    async def watch(stop: asyncio.Event) -> None:
        failing: set[str] = set()
        while not stop.is_set():
            await refresh(bus, queues, streams, refreshers, failing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    return watch


async def refresh(
    bus: Bus,
    queues: Sequence[WatchedQueue],
    streams: Sequence[str] = (),
    refreshers: Sequence[Refresh] = (),
    failing: set[str] | None = None,
    timeout_s: float = 5.0,
) -> None:
    """One round of `queue_watcher`. `failing` names the reads that failed last round (a
    failure is logged as a warning once, until that read works again)."""
    failing = set() if failing is None else failing
    reads: list[tuple[str, Refresh]] = [
        *((f"consumer {q.stream}/{q.durable}", functools.partial(_queue, bus, q)) for q in queues),
        *((f"stream {s}", functools.partial(_stream, bus, s)) for s in streams),
        *((f"{getattr(r, '__qualname__', 'refresher')}", r) for r in refreshers),
    ]
    for name, read in reads:
        try:
            await asyncio.wait_for(read(), timeout_s)
        except Exception as exc:  # timeouts, connection and JetStream errors alike
            if name not in failing:
                failing.add(name)
                # A consumer not made yet (its service has not started) is no fault.
                level = logging.INFO if isinstance(exc, NotFoundError) else logging.WARNING
                log.log(level, "metrics: cannot read %s: %r", name, exc)
        else:
            failing.discard(name)


async def _queue(bus: Bus, q: WatchedQueue) -> None:
    stats = await bus.queue_stats(q.durable, q.subject, stream=q.stream)
    labels = (q.stream, q.durable)
    CONSUMER_PENDING(*labels).set(stats.pending)
    CONSUMER_ACK_PENDING(*labels).set(stats.ack_pending)
    CONSUMER_REDELIVERED(*labels).set(stats.redelivered)
    CONSUMER_WAITING(*labels).set(stats.waiting)
    CONSUMER_OLDEST_AGE(*labels).set(stats.oldest_age_s or 0.0)


async def _stream(bus: Bus, name: str) -> None:
    info = await bus.js.stream_info(name)
    STREAM_MESSAGES(name).set(info.state.messages)


# ---- gRPC interceptors ---------------------------------------------------------------------


class _Method:
    """The children of one RPC method, looked up once per method, not per call."""

    __slots__ = ("_by_code", "_handled", "_labels", "seconds")

    def __init__(self, handled: Family[Counter], seconds: Family[Histogram], method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self._labels = (service or "unknown", name or "unknown")
        self._handled = handled
        self._by_code: dict[grpc.StatusCode, Counter] = {}
        self.seconds = seconds(*self._labels)

    def done(self, code: grpc.StatusCode, started: float) -> None:
        self.seconds.observe(time.perf_counter() - started)
        counter = self._by_code.get(code)
        if counter is None:
            counter = self._by_code[code] = self._handled(*self._labels, code.name)
        counter.inc()


class _Methods:
    def __init__(self, handled: Family[Counter], seconds: Family[Histogram]) -> None:
        self._handled = handled
        self._seconds = seconds
        self._methods: dict[str, _Method] = {}

    def get(self, method: str | bytes) -> _Method:
        key = method.decode() if isinstance(method, bytes) else method
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = _Method(self._handled, self._seconds, key)
        return found

    def clear(self) -> None:
        self._methods.clear()


def _server_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK


class ServerMetricsInterceptor(WrappingInterceptor):
    """pixmesh_grpc_server_*: every RPC by method and final code, and its duration.

    Must be the first (outermost) interceptor: it then sees the status the client gets,
    including the aborts ErrorInterceptor makes of ServiceErrors. A stream counts when it ends.
    Health and reflection RPCs are counted like any other (filter on grpc_service).
    """

    def __init__(self) -> None:
        super().__init__()
        self._methods = _Methods(GRPC_SERVER_HANDLED, GRPC_SERVER_SECONDS)
        self._service = _service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self._service != _service:  # configure() was called again (tests)
            self._methods.clear()
            self.forget()  # the kept handlers record into the former service's children
            self._service = _service
        return await super().intercept_service(continuation, handler_call_details)

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = self._methods.get(details.method)
        return rewrap(
            handler,
            lambda fn: _unary(fn, method),
            lambda fn: _stream_handler(fn, method),
        )


def _unary(fn: Callable[..., Any], method: _Method) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await fn(request, context)
        except asyncio.CancelledError:
            method.done(grpc.StatusCode.CANCELLED, started)
            raise
        except grpc.aio.AbortError:
            method.done(_server_code(context), started)
            raise
        except Exception:
            method.done(grpc.StatusCode.UNKNOWN, started)
            raise
        method.done(_server_code(context), started)
        return response

    return wrapper


def _stream_handler(fn: Callable[..., Any], method: _Method) -> Callable[..., Any]:
    async def wrapper(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            async for item in fn(request, context):
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = _server_code(context)
            raise
        except Exception:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            method.done(code or _server_code(context), started)

    return wrapper


class _ClientInterceptor:
    def __init__(self) -> None:
        self._methods = _Methods(GRPC_CLIENT_HANDLED, GRPC_CLIENT_SECONDS)
        self._service = _service

    def _method(self, details: grpc.aio.ClientCallDetails) -> _Method:
        if self._service != _service:
            self._methods.clear()
            self._service = _service
        return self._methods.get(details.method)

    async def _unary(self, call: Any, method: _Method, started: float) -> Any:
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            method.done(exc.code(), started)
        except asyncio.CancelledError:
            method.done(grpc.StatusCode.CANCELLED, started)
            raise
        else:
            method.done(grpc.StatusCode.OK, started)
        return call  # awaited again by the caller: the same response, or the same error

    def _on_done(self, method: _Method, started: float) -> Callable[[Any], None]:
        def done(call: Any) -> None:
            if call.cancelled():
                method.done(grpc.StatusCode.CANCELLED, started)
                return
            # The call is over, so code() answers at once; it is a coroutine all the same.
            task = asyncio.ensure_future(call.code())
            task.add_done_callback(lambda t: method.done(_task_code(t), started))

        return done


def _task_code(task: asyncio.Task[grpc.StatusCode]) -> grpc.StatusCode:
    if task.cancelled() or task.exception() is not None:
        return grpc.StatusCode.UNKNOWN
    return task.result()


# grpc ships no type stubs, so its base classes are Any to mypy.
class UnaryUnaryMetrics(_ClientInterceptor, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = self._method(details)
        started = time.perf_counter()
        return await self._unary(await continuation(details, request), method, started)


class StreamUnaryMetrics(_ClientInterceptor, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        method = self._method(details)
        started = time.perf_counter()
        return await self._unary(await continuation(details, requests), method, started)


class UnaryStreamMetrics(_ClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = self._method(details)
        started = time.perf_counter()
        call = await continuation(details, request)
        call.add_done_callback(self._on_done(method, started))
        return call


class StreamStreamMetrics(_ClientInterceptor, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        method = self._method(details)
        started = time.perf_counter()
        call = await continuation(details, requests)
        call.add_done_callback(self._on_done(method, started))
        return call


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """pixmesh_grpc_client_*, one interceptor per call shape, for grpc.aio channels."""
    return [UnaryUnaryMetrics(), StreamUnaryMetrics(), UnaryStreamMetrics(), StreamStreamMetrics()]
