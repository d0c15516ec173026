"""The task-worker flow shared by imaging, inference and metadata.

Pull a Task from `pixmesh.task.<service>`, report TaskStarted, read the stage input from object
storage, run the service's processor, store the result under a content-addressed key, report
TaskCompleted, then ack. Permanent failures (and tasks out of deliveries) become a TaskFailed
event plus a copy in PIXMESH_DLQ. Every event carries a unique id (also its Nats-Msg-Id) so the
jobs service can apply it exactly once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from pixmesh.common.v1 import image_pb2, job_pb2, metadata_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime import bus as busmod
from services.runtime import metrics
from services.runtime.bus import Bus, Consumer, Delivery
from services.runtime.errors import DeadlineExceeded, Internal, InvalidArgument, ServiceError
from services.runtime.settings import WorkerSettings
from services.runtime.storage import Storage, output_key


@dataclass(frozen=True)
class ImageResult:
    data: bytes
    format: image_pb2.ImageFormat.ValueType
    content_type: str
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class StageResult:
    """What a processor returns: an image, metadata, or both, and how its operations ran.

    A stage with renditions returns one image per rendition instead, in the task's order,
    each with the rendition's name.
    """

    image: ImageResult | None = None
    metadata: metadata_pb2.ImageMetadata | None = None
    reports: Sequence[job_pb2.OperationReport] = ()
    renditions: Sequence[tuple[str, ImageResult]] = ()


Processor = Callable[[events_pb2.Task, bytes], Awaitable[StageResult]]


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def seconds_left(task: events_pb2.Task) -> float | None:
    """Seconds until the job's deadline, or None when the task has none."""
    if not task.HasField("deadline"):
        return None
    return task.deadline.ToNanoseconds() / 1e9 - time.time()


def monotonic_deadline(task: events_pb2.Task) -> float | None:
    """The job's deadline on the time.monotonic() clock (what CPU-bound steps check)."""
    left = seconds_left(task)
    return None if left is None else time.monotonic() + left


class TaskWorker:
    def __init__(
        self, bus: Bus, storage: Storage, settings: WorkerSettings, process: Processor
    ) -> None:
        self.bus = bus
        self.storage = storage
        self.settings = settings
        self.service = settings.service_name
        self.process = process

    def consumer(self) -> Consumer:
        return Consumer(
            self.bus,
            stream=busmod.TASKS_STREAM,
            durable=f"{self.service}-tasks",
            subject=busmod.task_subject(self.service),
            handler=self.handle,
            on_give_up=self.give_up,
            concurrency=self.settings.concurrency,
            max_ack_pending=self.settings.max_ack_pending,
            ack_wait=self.settings.ack_wait_s,
            max_deliver=self.settings.max_deliver,
            count_tasks=True,
        )

    async def handle(self, delivery: Delivery) -> None:
        task = _parse(delivery)
        trace.get_current_span().set_attributes(
            {"pixmesh.job_id": task.job_id, "pixmesh.stage": task.stage_index}
        )
        started = time.perf_counter()
        try:
            await self._run(task, delivery)
        finally:
            metrics.TASK_DURATION(operation(task)).observe(time.perf_counter() - started)

    async def _run(self, task: events_pb2.Task, delivery: Delivery) -> None:
        left = seconds_left(task)
        if left is not None and left <= 0:
            raise DeadlineExceeded(message="the job's deadline passed before this stage ran")
        await self._emit(
            task,
            f"started.{delivery.attempt}",
            started=events_pb2.TaskStarted(attempt=delivery.attempt),
        )
        data = await self.storage.get(task.input_key)
        result = await self.process(task, data)
        completed = events_pb2.TaskCompleted()
        if result.image is not None:
            completed.output_key, output = await self._store(task, stage_spec(task), result.image)
            completed.output.CopyFrom(output)
        names = [name for name, _ in result.renditions]
        if names and names != [r.name for r in task.renditions]:
            raise Internal(
                message=f"the stage made renditions {names}, not the task's", retryable=False
            )
        for index, (name, img) in enumerate(result.renditions):
            key, output = await self._store(task, rendition_spec(task, name), img)
            output.index = index
            output.rendition = name
            completed.rendition_outputs.append(events_pb2.RenditionOutput(key=key, output=output))
        if result.metadata is not None:
            completed.metadata.CopyFrom(result.metadata)
        completed.reports.extend(result.reports)
        await self._emit(task, "completed", completed=completed)

    async def _store(
        self, task: events_pb2.Task, spec: bytes, img: ImageResult
    ) -> tuple[str, job_pb2.Output]:
        """Store `img` under its content-addressed key (once) and describe it."""
        key = output_key(task.input_key, spec, img.extension)
        if not await self.storage.exists(key):
            await self.storage.put(key, img.data, img.content_type)
        return key, job_pb2.Output(
            format=img.format,
            content_type=img.content_type,
            width=img.width,
            height=img.height,
            size_bytes=len(img.data),
            sha256=hashlib.sha256(img.data).hexdigest(),
        )

    async def give_up(self, delivery: Delivery, err: ServiceError) -> None:
        error = job_pb2.JobError(code=err.code.name, reason=err.reason, message=err.message)
        try:
            task = _parse(delivery)
        except InvalidArgument:
            task = events_pb2.Task()
        await self.bus.publish(
            busmod.dlq_subject(self.service),
            events_pb2.DeadLetter(
                task=task, error=error, deliveries=delivery.attempt, time=now_ts()
            ),
            msg_id=f"{task.task_id or 'unparsable'}.dead.{delivery.attempt}",
        )
        if task.task_id:
            await self._emit(
                task, "failed", failed=events_pb2.TaskFailed(error=error, attempts=delivery.attempt)
            )

    async def _emit(self, task: events_pb2.Task, suffix: str, **outcome: object) -> None:
        event_id = f"{task.task_id}.{suffix}"
        event = events_pb2.TaskEvent(
            event_id=event_id,
            task_id=task.task_id,
            job_id=task.job_id,
            stage_index=task.stage_index,
            time=now_ts(),
            **outcome,  # type: ignore[arg-type]
        )
        kind = suffix.split(".", 1)[0]
        await self.bus.publish(busmod.task_event_subject(kind), event, msg_id=event_id)


def operation(task: events_pb2.Task) -> str:
    """The kind of a task's first operation ("resize"; a rendition's when the stage has no
    shared ones): the pixmesh_task_duration_seconds label, one of a fixed set."""
    ops = task.operations or (task.renditions[0].operations if task.renditions else ())
    return (ops[0].WhichOneof("op") if ops else None) or "none"


def stage_spec(task: events_pb2.Task) -> bytes:
    """What a stage's output key stands for besides its input: the stage's operations."""
    return b"".join(op.SerializeToString(deterministic=True) for op in task.operations)


def rendition_spec(task: events_pb2.Task, name: str) -> bytes:
    """What rendition `name`'s output key stands for: the stage's operations, all its renditions
    (the largest decides how far a JPEG is scaled while decoding, so a rendition's pixels depend
    on its siblings) and the name."""
    whole = events_pb2.Task(operations=task.operations, renditions=task.renditions)
    return whole.SerializeToString(deterministic=True) + b"\0" + name.encode()


def _parse(delivery: Delivery) -> events_pb2.Task:
    try:
        return events_pb2.Task.FromString(delivery.data)
    except Exception as exc:
        raise InvalidArgument(message="malformed task message", reason="BAD_TASK") from exc


async def connect_worker(
    stack: AsyncExitStack, settings: WorkerSettings, process: Processor
) -> Consumer:
    """Connect a worker service to NATS and object storage and return its ready consumer.

    Resources are closed by `stack`, after the consumer has drained.
    """
    bus = await Bus.connect(
        settings.nats_url,
        f"pixmesh-{settings.service_name}",
        stream_replicas=settings.stream_replicas,
    )
    stack.push_async_callback(bus.close)
    await bus.ensure_streams()
    storage = Storage.from_settings(settings)
    await storage.ensure_bucket()
    consumer = TaskWorker(bus, storage, settings, process).consumer()
    await consumer.setup()
    return consumer
