"""services/runtime/metrics.py: the families of the team's list, the exposition server, the gRPC
interceptors (a real grpc.aio server and channel in-process), the step mapping of imaging, the
queue watcher's resilience, and the task counters of the bus Consumer (real NATS)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js import api as js_api
from prometheus_client import REGISTRY, generate_latest

from pixmesh.common.v1 import job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime import metrics
from services.runtime.bus import Bus, Consumer, Delivery, QueueStats
from services.runtime.errors import InvalidArgument, NotFound, ServiceError, Unavailable
from services.runtime.server import ErrorInterceptor, channel
from services.runtime.settings import ServiceSettings
from services.runtime.worker import operation

# The team's list (notes: "Metric names"), without the _total/_bucket suffixes of the exposition.
FAMILIES = {
    "pixmesh_service_info": ("instance", "version"),
    "pixmesh_grpc_server_handled_total": ("grpc_service", "grpc_method", "grpc_code"),
    "pixmesh_grpc_server_handling_seconds": ("grpc_service", "grpc_method"),
    "pixmesh_grpc_client_handled_total": ("grpc_service", "grpc_method", "grpc_code"),
    "pixmesh_grpc_client_handling_seconds": ("grpc_service", "grpc_method"),
    "pixmesh_tasks_received_total": (),
    "pixmesh_tasks_succeeded_total": (),
    "pixmesh_tasks_failed_total": ("reason",),
    "pixmesh_tasks_retried_total": ("reason",),
    "pixmesh_tasks_dead_lettered_total": ("reason",),
    "pixmesh_task_duration_seconds": ("operation",),
    "pixmesh_task_queue_wait_seconds": (),
    "pixmesh_consumer_pending": ("stream", "consumer"),
    "pixmesh_consumer_ack_pending": ("stream", "consumer"),
    "pixmesh_consumer_redelivered": ("stream", "consumer"),
    "pixmesh_consumer_oldest_pending_age_seconds": ("stream", "consumer"),
    "pixmesh_consumer_waiting": ("stream", "consumer"),
    "pixmesh_stream_messages": ("stream",),
    "pixmesh_jobs_created_total": (),
    "pixmesh_jobs_finished_total": ("state",),
    "pixmesh_job_duration_seconds": ("state",),
    "pixmesh_jobs_running": (),
    "pixmesh_jobs_events_applied_total": (),
    "pixmesh_imaging_step_seconds": ("step", "format"),
    "pixmesh_imaging_child_recycles_total": (),
    "pixmesh_imaging_child_crashes_total": (),
    "pixmesh_imaging_memory_kills_total": (),
    "pixmesh_inference_batch_size": (),
    "pixmesh_inference_queue_delay_seconds": (),
    "pixmesh_inference_tiles_total": ("model", "provider"),
    "pixmesh_inference_provider_info": ("provider",),
    "pixmesh_metadata_indexing_lag_seconds": (),
    "pixmesh_webhook_attempts_total": ("outcome",),
    "pixmesh_batches": ("state",),
    "pixmesh_batch_images_total": ("state",),
    "pixmesh_batch_bytes_total": ("direction",),
    "pixmesh_retention_removed_total": ("store",),
    "pixmesh_gateway_idempotency_hits_total": (),
    "pixmesh_gateway_backpressure_refusals_total": ("queue",),
}


@pytest.fixture
def service() -> Iterator[str]:
    """A service label of this test's own, so counts start at zero."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    metrics.configure(name)
    try:
        yield name
    finally:
        metrics.configure("pixmesh")


def value(name: str, **labels: str) -> float:
    labels.setdefault("service", metrics.service())
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_family_of_the_list_is_defined_with_its_labels_service_first() -> None:
    defined = {}
    for family in metrics._families:
        m = family.metric
        name = m._name + ("_total" if m._type == "counter" else "")
        defined[name] = tuple(m._labelnames)
    assert set(defined) == set(FAMILIES)
    for name, labels in FAMILIES.items():
        assert defined[name] == ("service", *labels), name


def test_children_are_cached_per_service_and_configure_switches_the_label(service: str) -> None:
    assert metrics.TASKS_FAILED("BAD") is metrics.TASKS_FAILED("BAD")
    metrics.TASKS_FAILED("BAD").inc()
    other = f"{service}-b"
    metrics.configure(other)
    metrics.TASKS_FAILED("BAD").inc(2)
    assert value("pixmesh_tasks_failed_total", service=service, reason="BAD") == 1
    assert value("pixmesh_tasks_failed_total", service=other, reason="BAD") == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        assert resp.headers["Content-Type"].startswith("text/plain")
    return body.decode()


def test_the_server_serves_prometheus_text_with_service_info_and_stops() -> None:
    settings = ServiceSettings(service_name="metrics-test", metrics_port=_free_port())
    server = metrics.start_metrics_server(settings)
    assert server is not None
    try:
        text = _scrape(server.url)
    finally:
        server.stop()
        metrics.configure("pixmesh")
    info = re.search(r"^pixmesh_service_info\{([^}]*)\} 1\.0$", text, re.M)
    assert info is not None, text[:2000]
    assert 'service="metrics-test"' in info.group(1)
    assert f'instance="{socket.gethostname()}-' in info.group(1)
    assert 'version="' in info.group(1)
    # prometheus-client's process collector, and no _created series.
    assert "\nprocess_cpu_seconds_total " in text
    assert "\nprocess_resident_memory_bytes " in text
    assert not re.search(r"^\w+_created[{ ]", text, re.M)
    for name in FAMILIES:
        assert f"# TYPE {name} " in text, name
    with pytest.raises(urllib.error.URLError):
        _scrape(server.url)


def test_port_zero_serves_nothing_but_labels_the_process() -> None:
    try:
        assert (
            metrics.start_metrics_server(ServiceSettings(service_name="off", metrics_port=0))
            is None
        )
        assert metrics.service() == "off"
        assert (
            REGISTRY.get_sample_value(
                "pixmesh_service_info",
                {"service": "off", "instance": metrics.instance(), "version": metrics.version()},
            )
            == 1
        )
    finally:
        metrics.configure("pixmesh")


# ---- gRPC ----------------------------------------------------------------------------------

HEALTH = "grpc.health.v1.Health"


class _Health(health_pb2_grpc.HealthServicer):
    """Check answers by the requested service name; Watch streams two answers, or fails."""

    async def Check(self, request: Any, context: Any) -> Any:
        match request.service:
            case "missing":
                raise NotFound(message="no such thing")
            case "bug":
                raise RuntimeError("internal text")
            case "denied":
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
            case "exists":
                context.set_code(grpc.StatusCode.ALREADY_EXISTS)
            case "slow":
                await asyncio.sleep(30)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        if request.service == "missing":
            raise NotFound(message="gone")
        if request.service == "forever":
            await asyncio.sleep(30)
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


@pytest.fixture
async def target(service: str) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[metrics.ServerMetricsInterceptor(), ErrorInterceptor()])
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def handled(side: str, method: str, code: str) -> float:
    return value(
        f"pixmesh_grpc_{side}_handled_total",
        grpc_service=HEALTH,
        grpc_method=method,
        grpc_code=code,
    )


def seconds_count(side: str, method: str) -> float:
    return value(
        f"pixmesh_grpc_{side}_handling_seconds_count", grpc_service=HEALTH, grpc_method=method
    )


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_unary_rpcs_are_counted_by_their_final_code_on_both_sides(target: str) -> None:
    async with channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        await stub.Check(health_pb2.HealthCheckRequest(service=""))
        await stub.Check(health_pb2.HealthCheckRequest(service=""))
        codes = {}
        for name in ("missing", "bug", "denied", "exists"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Check(health_pb2.HealthCheckRequest(service=name))
            codes[name] = err.value.code()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="slow"), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert codes == {
        "missing": grpc.StatusCode.NOT_FOUND,  # ErrorInterceptor's abort of a ServiceError
        "bug": grpc.StatusCode.INTERNAL,  # ... of anything else
        "denied": grpc.StatusCode.PERMISSION_DENIED,  # the handler's own abort
        "exists": grpc.StatusCode.ALREADY_EXISTS,  # set_code and return
    }
    for side in ("server", "client"):
        assert handled(side, "Check", "OK") == 2, side
        for code in codes.values():
            assert handled(side, "Check", code.name) == 1, (side, code)
    assert handled("client", "Check", "DEADLINE_EXCEEDED") == 1
    # The server's handler is cancelled at the deadline.
    await eventually(lambda: handled("server", "Check", "CANCELLED") == 1)
    assert seconds_count("server", "Check") == 7
    assert seconds_count("client", "Check") == 7


async def test_streams_count_when_they_end(target: str) -> None:
    async with channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        got = [r async for r in stub.Watch(health_pb2.HealthCheckRequest(service=""))]
        assert len(got) == 2
        call = stub.Watch(health_pb2.HealthCheckRequest(service="missing"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        forever = stub.Watch(health_pb2.HealthCheckRequest(service="forever"))
        await forever.read()
        assert handled("server", "Watch", "CANCELLED") == 0  # still open
        forever.cancel()
        await eventually(lambda: handled("server", "Watch", "CANCELLED") == 1)
        await eventually(lambda: handled("client", "Watch", "NOT_FOUND") == 1)
    for side in ("server", "client"):
        assert handled(side, "Watch", "OK") == 1, side
        assert handled(side, "Watch", "NOT_FOUND") == 1, side
    await eventually(lambda: handled("client", "Watch", "CANCELLED") == 1)


async def test_the_server_interceptor_costs_little(target: str) -> None:
    """Not a benchmark: a guard against an accidental per-call allocation storm (e.g. calling
    prometheus-client's .labels() and parsing the method name on every call)."""
    interceptor = metrics.ServerMetricsInterceptor()
    handler = grpc.unary_unary_rpc_method_handler(_noop)

    async def continuation(_: Any) -> Any:
        return handler

    details = _Details("/pixmesh.jobs.v1.JobsService/GetJob")
    wrapped = await interceptor.intercept_service(continuation, details)
    context = _Context()
    loop = asyncio.get_running_loop()
    n = 20_000
    start = loop.time()
    for _ in range(n):
        wrapped = await interceptor.intercept_service(continuation, details)
        await wrapped.unary_unary(None, context)
    per_call = (loop.time() - start) / n
    assert per_call < 100e-6, per_call
    assert (
        value(
            "pixmesh_grpc_server_handled_total",
            grpc_service="pixmesh.jobs.v1.JobsService",
            grpc_method="GetJob",
            grpc_code="OK",
        )
        == n
    )


async def _noop(request: Any, context: Any) -> None:
    return None


@dataclass
class _Details:
    method: str


class _Context:
    def code(self) -> None:
        return None


# ---- helpers -------------------------------------------------------------------------------


def test_imaging_steps_group_decode_ops_and_each_output_encode(service: str) -> None:
    metrics.imaging_steps(
        {
            "probe": 0.01,
            "validate": 0.01,
            "decode": 0.1,
            "orient": 0.0,
            "colour": 0.02,
            "normalize": 0.01,
            "op0.resize": 0.2,
            "op1.orient": 0.05,
            "thumb.op2.crop": 0.1,
            "thumb.strip": 0.01,
            "thumb.encode": 0.3,
            "large.strip": 0.02,
            "large.encode": 0.5,
        },
        "jpg",
        [("thumb.", "webp"), ("large.", "jpg")],
    )

    def total(step: str, fmt: str) -> float:
        return value("pixmesh_imaging_step_seconds_sum", step=step, format=fmt)

    assert total("decode", "jpg") == pytest.approx(0.15)
    assert total("ops", "jpg") == pytest.approx(0.35)
    assert total("encode", "webp") == pytest.approx(0.31)
    assert total("encode", "jpg") == pytest.approx(0.52)
    assert value("pixmesh_imaging_step_seconds_count", step="encode", format="jpg") == 1


def test_job_finished_counts_and_times_by_state(service: str) -> None:
    metrics.job_finished("SUCCEEDED", 2.0)
    metrics.job_finished("SUCCEEDED", 4.0)
    metrics.job_finished("CANCELLED", -1.0)  # clock skew never goes below 0
    assert value("pixmesh_jobs_finished_total", state="SUCCEEDED") == 2
    assert value("pixmesh_job_duration_seconds_sum", state="SUCCEEDED") == 6.0
    assert value("pixmesh_job_duration_seconds_sum", state="CANCELLED") == 0.0


def test_operation_is_the_first_op_kind_of_the_stage_or_of_its_first_rendition() -> None:
    resize = operations_pb2.Operation(resize=operations_pb2.Resize(width=10))
    crop = operations_pb2.Operation(crop=operations_pb2.Crop(width=5, height=5))
    assert operation(events_pb2.Task(operations=[resize, crop])) == "resize"
    task = events_pb2.Task(renditions=[operations_pb2.Rendition(name="a", operations=[crop])])
    assert operation(task) == "crop"
    assert operation(events_pb2.Task()) == "none"


# ---- queue watcher -------------------------------------------------------------------------


class _FlakyBus:
    """queue_stats / stream_info that fail while `down` is set."""

    def __init__(self) -> None:
        self.down = False
        self.js = self
        self.reads = 0

    async def queue_stats(self, durable: str, subject: str, *, stream: str) -> QueueStats:
        self.reads += 1
        if self.down:
            raise TimeoutError("nats: timeout")
        return QueueStats(stream, durable, 7, 2, 1, 3, 42.0)

    async def stream_info(self, name: str) -> Any:
        if self.down:
            raise ConnectionError("nats: connection closed")

        @dataclass
        class State:
            messages: int = 11

        @dataclass
        class Info:
            state: State

        return Info(State())


async def test_the_watcher_survives_failures_keeps_last_values_and_logs_once(
    service: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = _FlakyBus()
    queues = [metrics.WatchedQueue("PIXMESH_TASKS", "imaging-tasks", "pixmesh.task.imaging")]
    refreshed = 0

    async def refresher() -> None:
        nonlocal refreshed
        refreshed += 1
        if bus.down:
            raise OSError("postgres down")

    labels = {"stream": "PIXMESH_TASKS", "consumer": "imaging-tasks"}
    stop = asyncio.Event()
    watch = metrics.queue_watcher(
        bus,  # type: ignore[arg-type]
        queues,
        streams=["PIXMESH_DLQ"],
        refreshers=[refresher],
        interval_s=0.01,
    )
    with caplog.at_level(logging.WARNING, logger=metrics.__name__):
        task = asyncio.create_task(watch(stop))
        await eventually(lambda: value("pixmesh_consumer_pending", **labels) == 7)
        assert value("pixmesh_consumer_ack_pending", **labels) == 2
        assert value("pixmesh_consumer_redelivered", **labels) == 1
        assert value("pixmesh_consumer_waiting", **labels) == 3
        assert value("pixmesh_consumer_oldest_pending_age_seconds", **labels) == 42.0
        assert value("pixmesh_stream_messages", stream="PIXMESH_DLQ") == 11
        bus.down = True
        reads = bus.reads
        await eventually(lambda: bus.reads >= reads + 5)
        assert not task.done()
        assert value("pixmesh_consumer_pending", **labels) == 7
        bus.down = False
        await eventually(lambda: bus.reads >= reads + 10)
        stop.set()
        await asyncio.wait_for(task, 1.0)
    warnings = [r.getMessage() for r in caplog.records]
    # One warning per failing read for the whole outage, not one per round.
    assert len(warnings) == 3, warnings
    assert refreshed >= 10


# ---- task counters of the bus consumer (real NATS) -----------------------------------------


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, "test-metrics")
    try:
        yield b
    finally:
        await b.close()


@pytest.mark.integration
async def test_the_consumer_counts_received_succeeded_failed_retried_and_dead_lettered(
    bus: Bus, service: str
) -> None:
    name = f"TEST_{uuid.uuid4().hex[:8].upper()}"
    subject = f"test.{name.lower()}.work"
    await bus.js.add_stream(
        js_api.StreamConfig(
            name=name,
            subjects=[f"test.{name.lower()}.>"],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            storage=js_api.StorageType.MEMORY,
        )
    )
    given_up: list[str] = []

    async def handle(delivery: Delivery) -> None:
        code = job_pb2.JobError.FromString(delivery.data).code
        if code == "flaky" and delivery.attempt == 1:
            raise Unavailable(message="try again", reason="FLAKY", retryable=True)
        if code == "bad":
            raise InvalidArgument(message="no", reason="BAD")

    async def give_up(delivery: Delivery, err: ServiceError) -> None:
        given_up.append(err.reason)

    consumer = Consumer(
        bus,
        stream=name,
        durable="work",
        subject=subject,
        handler=handle,
        on_give_up=give_up,
        concurrency=2,
        ack_wait=5.0,
        max_deliver=3,
        max_ack_pending=10,
        retry_delays=(0.1,),
        count_tasks=True,
    )
    stop = asyncio.Event()
    try:
        await consumer.setup()
        for i, code in enumerate(("ok", "flaky", "bad")):
            await bus.publish(subject, job_pb2.JobError(code=code), msg_id=f"{name}.{i}")
        task = asyncio.create_task(consumer.run(stop))
        await eventually(lambda: value("pixmesh_tasks_succeeded_total") == 2, timeout=10)
        await eventually(lambda: value("pixmesh_tasks_dead_lettered_total", reason="BAD") == 1)
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        stop.set()
        await bus.js.delete_stream(name)
    assert given_up == ["BAD"]
    assert value("pixmesh_tasks_received_total") == 4  # "flaky" twice
    assert value("pixmesh_tasks_failed_total", reason="FLAKY") == 1
    assert value("pixmesh_tasks_retried_total", reason="FLAKY") == 1
    assert value("pixmesh_tasks_dead_lettered_total", reason="FLAKY") == 0
    assert value("pixmesh_tasks_failed_total", reason="BAD") == 1
    assert value("pixmesh_tasks_retried_total", reason="BAD") == 0
    # First deliveries only: the retry's delay is not queue wait.
    assert value("pixmesh_task_queue_wait_seconds_count") == 3
    assert 0 <= value("pixmesh_task_queue_wait_seconds_sum") < 10


def test_a_recorded_value_is_exposed_with_its_labels(service: str) -> None:
    metrics.TASKS_FAILED("BAD").inc()
    text = generate_latest(REGISTRY).decode()
    assert f'pixmesh_tasks_failed_total{{reason="BAD",service="{service}"}} 1.0' in text
