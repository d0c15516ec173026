"""The task-worker flow shared by imaging, inference and metadata.

Pull a Task from `pixmesh.task.<service>`, report TaskStarted, read the stage input from object
storage, run the service's processor, store the result under a content-addressed key, report
TaskCompleted, then ack.

Reuse: a processor that can resolve a task before reading it (`Resolver`: its engine and
defaults, the extensions each output may have) lets the worker look its output keys up first
(HEADs, no download). When every output exists with its sha256 in its metadata, the stage skips
the download and the work and reports them `reused`; Task.recompute (CreateJob `reuse: false`)
computes them all the same. A new key is PUT without a HEAD before it; a key found present is
not written again unless its bytes differ (an engine that is not deterministic), in which case
the new bytes get a key of their own, so that every record describes the bytes it points at. Permanent failures (and tasks out of deliveries) become a TaskFailed
event plus a copy in PIXMESH_DLQ. Every event carries a unique id (also its Nats-Msg-Id) so the
jobs service can apply it exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from pixmesh.common.v1 import image_pb2, job_pb2, metadata_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime import bus as busmod
from services.runtime import metrics
from services.runtime.bus import Bus, Consumer, Delivery, EventRetention
from services.runtime.errors import DeadlineExceeded, Internal, InvalidArgument, ServiceError
from services.runtime.lanes import BATCH_LANE
from services.runtime.presence import Announcer, instance_id
from services.runtime.provenance import (
    KEY_SCHEME,
    current_trace_id,
    engine_fingerprint,
    output_key,
    work_digest,
)
from services.runtime.settings import WorkerSettings
from services.runtime.storage import ObjectHead, Storage

# How many of a stage's outputs go to object storage at once (a poster job has three; a job at
# most `max_renditions`, 10 by default); well under the S3 client's connection pool (32).
STORE_CONCURRENCY = 4

_T = TypeVar("_T")


@dataclass(frozen=True)
class ImageResult:
    data: bytes
    format: image_pb2.ImageFormat.ValueType
    content_type: str
    extension: str
    width: int
    height: int
    # The operations that made it with every default the processor filled in (provenance);
    # empty: the task's operations as they are.
    operations: Sequence[operations_pb2.Operation] = ()


@dataclass(frozen=True)
class Resolution:
    """What a processor knows of a task before reading its input: enough to find its outputs.

    `engine`: everything the bytes depend on besides the input and the operations (library
    versions, the defaults the processor fills in). `extensions`: for each output (the image, or
    each rendition in order), the extensions it may have. `operations(i, format)`: output i's
    operations with the defaults filled in, once its format is known (for a reused output's
    provenance).
    """

    engine: Mapping[str, str]
    extensions: Sequence[Sequence[str]]
    operations: (
        Callable[[int, image_pb2.ImageFormat.ValueType], Sequence[operations_pb2.Operation]] | None
    ) = None


Resolver = Callable[[events_pb2.Task], Resolution | None]


@dataclass(frozen=True)
class _Found:
    """An output found in storage under its key, with the facts its metadata records."""

    key: str
    head: ObjectHead

    @property
    def sha256(self) -> str:
        return self.head.metadata.get("sha256", "")

    @property
    def verified(self) -> bool:
        """Written by this scheme: its sha256 is recorded and its size is the recorded one."""
        meta = self.head.metadata
        return len(self.sha256) == 64 and meta.get("size") == str(self.head.size)


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

    @property
    def outputs(self) -> list[tuple[str, ImageResult]]:
        """Every image it made, by name: the renditions, or a plain stage's image unnamed."""
        if self.renditions:
            return list(self.renditions)
        return [("", self.image)] if self.image is not None else []


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
    """`resolve` (optional) makes outputs findable before the work (see the module doc);
    `engine` is the fingerprint in the keys of a processor without one. `reads_input`: the
    processor reads the task's input itself (it is handed b"")."""

    def __init__(
        self,
        bus: Bus,
        storage: Storage,
        settings: WorkerSettings,
        process: Processor,
        *,
        resolve: Resolver | None = None,
        engine: Mapping[str, str] | None = None,
        reads_input: bool = False,
    ) -> None:
        self.bus = bus
        self.storage = storage
        self.settings = settings
        self.service = settings.service_name
        self.process = process
        self.resolve = resolve
        self.reads_input = reads_input
        self.engine = dict(engine if engine is not None else engine_fingerprint())
        self.instance = instance_id()

    def consumer(self) -> Consumer:
        return Consumer(
            self.bus,
            stream=busmod.TASKS_STREAM,
            durable=f"{self.service}-tasks",
            subject=busmod.task_subject(self.service),
            handler=self.handle,
            on_give_up=self.give_up,
            **busmod.consumer_limits(self.settings),
            count_tasks=True,
            # A batch's tasks (the jobs service sends them to the batch lane's subject).
            lanes={
                BATCH_LANE: (
                    busmod.task_durable(self.service, BATCH_LANE),
                    busmod.task_subject(self.service, BATCH_LANE),
                )
            },
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
        started = False

        async def report_start() -> None:
            nonlocal started
            if not started:
                started = True
                await self._emit(
                    task,
                    f"started.{delivery.attempt}",
                    started=events_pb2.TaskStarted(attempt=delivery.attempt),
                )

        delay = self.settings.started_delay_s
        if delay <= 0:
            await report_start()
        work = asyncio.ensure_future(self._work(task))
        try:
            if not started:
                done, _ = await asyncio.wait({work}, timeout=delay)
                if not done:
                    await report_start()
            completed = await work
        except Exception:
            # A failure (retried or not) shows that the task was taken, and which attempt.
            await report_start()
            raise
        finally:
            if not work.done():
                work.cancel()
        completed.attempt = delivery.attempt
        await self._emit(task, "completed", completed=completed)

    async def _work(self, task: events_pb2.Task) -> events_pb2.TaskCompleted:
        """Find or make the task's outputs; the TaskCompleted that describes them."""
        specs = output_specs(task)
        resolution = self.resolve(task) if self.resolve is not None else None
        engine = dict(resolution.engine) if resolution is not None else self.engine
        found: list[_Found | None] = []
        if resolution is not None:
            looked_up = time.perf_counter()
            found = await self._lookup(task, specs, engine, resolution)
            if not task.recompute and found and all(f is not None and f.verified for f in found):
                lookup_s = time.perf_counter() - looked_up
                return self._reused(task, found, engine, resolution, lookup_s)
        began = time.perf_counter()
        data = b"" if self.reads_input else await self.storage.get(task.input_key)
        fetched = time.perf_counter()
        result = await self.process(task, data)
        timings = _Timings(fetch_s=fetched - began, process_s=time.perf_counter() - fetched)
        decided = decided_by(result.reports)
        completed = events_pb2.TaskCompleted()
        outputs = result.outputs
        names = [name for name, _ in outputs]
        if names and names != ([r.name for r in task.renditions] or [""]):
            raise Internal(
                message=f"the stage made renditions {names}, not the task's", retryable=False
            )
        gate = asyncio.Semaphore(STORE_CONCURRENCY)

        async def store(index: int, img: ImageResult) -> tuple[str, job_pb2.Output]:
            async with gate:
                return await self._store(
                    task,
                    specs[index],
                    engine,
                    decided,
                    img,
                    found[index] if found else None,
                    index=index,
                    looked=bool(found),
                    timings=timings,
                )

        # Each output has a key of its own (its spec names it): they go to storage side by side.
        stored = await _all([store(index, img) for index, (_, img) in enumerate(outputs)])
        for index, (key, output) in enumerate(stored):
            _attach(completed, task, index, key, output)
        if result.metadata is not None:
            completed.metadata.CopyFrom(result.metadata)
        completed.reports.extend(result.reports)
        return completed

    async def _lookup(
        self,
        task: events_pb2.Task,
        specs: Sequence[bytes],
        engine: Mapping[str, str],
        resolution: Resolution,
    ) -> list[_Found | None]:
        """Each output's object, if one of its possible keys exists (HEADs, all at once)."""
        if len(resolution.extensions) != len(specs):
            return []
        digests = [work_digest(task.input_key, spec, engine) for spec in specs]
        keys = [
            [output_key(digest, ext) for ext in exts]
            for digest, exts in zip(digests, resolution.extensions, strict=True)
        ]
        flat = [key for candidates in keys for key in candidates]
        heads = dict(zip(flat, await asyncio.gather(*map(self.storage.head, flat)), strict=True))
        found: list[_Found | None] = []
        for candidates in keys:
            present = [_Found(key, heads[key]) for key in candidates if heads[key] is not None]  # type: ignore[arg-type]
            found.append(next((f for f in present if f.verified), present[0] if present else None))
        return found

    def _reused(
        self,
        task: events_pb2.Task,
        found: Sequence[_Found | None],
        engine: Mapping[str, str],
        resolution: Resolution,
        lookup_s: float,
    ) -> events_pb2.TaskCompleted:
        """The TaskCompleted of a stage whose outputs all exist: described from their
        metadata, nothing downloaded."""
        completed = events_pb2.TaskCompleted()
        timings = _Timings(store_s=lookup_s)
        for index, f in enumerate(found):
            assert f is not None
            meta = f.head.metadata
            fmt = int(meta.get("format", "0"))
            ops = (
                resolution.operations(index, fmt)  # type: ignore[arg-type]
                if resolution.operations is not None
                else output_operations(task, index)
            )
            output = job_pb2.Output(
                format=fmt,  # type: ignore[arg-type]
                content_type=f.head.content_type,
                width=int(meta.get("width", "0")),
                height=int(meta.get("height", "0")),
                size_bytes=f.head.size,
                sha256=f.sha256,
            )
            output.provenance.CopyFrom(
                self._provenance(task, ops, engine, {}, timings, meta.get("trace-id", ""))
            )
            output.provenance.reused = True
            _attach(completed, task, index, f.key, output)
        return completed

    async def _store(
        self,
        task: events_pb2.Task,
        spec: bytes,
        engine: Mapping[str, str],
        decided: Mapping[str, str],
        img: ImageResult,
        found: _Found | None,
        *,
        index: int,
        looked: bool,
        timings: _Timings,
    ) -> tuple[str, job_pb2.Output]:
        """Store `img` under its content-addressed key and describe it. `found`: what the
        lookup found for it (`looked`: whether there was one; without, a HEAD checks now)."""
        began = time.perf_counter()
        digest = work_digest(task.input_key, spec, engine, decided)
        key = output_key(digest, img.extension)
        sha = hashlib.sha256(img.data).hexdigest()
        if looked and (found is None or found.key != key):
            # The lookup saw the key missing (or found another extension): new, no HEAD.
            head = None
        elif found is not None:
            head = found.head
        else:
            head = await self.storage.head(key)
        present = _Found(key, head) if head is not None else None
        if present is not None and present.verified and present.sha256 != sha:
            # Same work, other bytes: keep the stored ones for whoever points at them.
            key = output_key(f"{digest}-{sha[:16]}", img.extension)
            present = None
        trace_id = current_trace_id()
        if present is None or not present.verified:
            meta = {
                "sha256": sha,
                "size": str(len(img.data)),
                "format": str(int(img.format)),
                "width": str(img.width),
                "height": str(img.height),
                "trace-id": trace_id,
                "key-scheme": KEY_SCHEME,
            }
            await self.storage.put(key, img.data, img.content_type, meta)
        output = job_pb2.Output(
            format=img.format,
            content_type=img.content_type,
            width=img.width,
            height=img.height,
            size_bytes=len(img.data),
            sha256=sha,
        )
        ops = img.operations or output_operations(task, index)
        stored = _Timings(timings.fetch_s, timings.process_s, time.perf_counter() - began)
        output.provenance.CopyFrom(self._provenance(task, ops, engine, decided, stored, trace_id))
        return key, output

    def _provenance(
        self,
        task: events_pb2.Task,
        operations: Sequence[operations_pb2.Operation],
        engine: Mapping[str, str],
        decided: Mapping[str, str],
        timings: _Timings,
        computed_trace_id: str,
    ) -> job_pb2.Provenance:
        return job_pb2.Provenance(
            source_sha256=task.source.sha256,
            input_key=task.input_key,
            operations=operations,
            engine={**engine, **decided},
            key_scheme=KEY_SCHEME,
            model=decided.get("model", ""),
            model_version=decided.get("model_version", ""),
            execution_provider=decided.get("execution_provider", ""),
            worker_service=self.service,
            worker_instance=self.instance,
            trace_id=current_trace_id(),
            computed_trace_id=computed_trace_id,
            fetch_seconds=timings.fetch_s,
            process_seconds=timings.process_s,
            store_seconds=timings.store_s,
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


@dataclass(frozen=True)
class _Timings:
    fetch_s: float = 0.0
    process_s: float = 0.0
    store_s: float = 0.0


def decided_by(reports: Sequence[job_pb2.OperationReport]) -> dict[str, str]:
    """What a stage decided while it ran that its bytes depend on: the model and execution
    provider of a Denoise (auto picks one from the image), per plane, the model, the
    resolution and the passes it ran at, and the chroma refinement. Part of the output key."""
    decided: dict[str, str] = {}
    for report in reports:
        if report.WhichOneof("report") == "denoise":
            d = report.denoise
            decided.setdefault("model", d.model)
            decided.setdefault("model_version", d.model_version)
            decided.setdefault("execution_provider", d.execution_provider)
            prefix = f"op{report.index}."
            decided[prefix + "model"] = f"{d.model}@{d.model_version}"
            decided[prefix + "execution_provider"] = d.execution_provider
            # Colour: every plane's model, resolution, passes (self-ensemble), the σ it was
            # given (estimated unless asked for: a better estimator changes the bytes of the
            # same model) and any model blended in with its weight, not only the first plane's
            # model: each changes the bytes.
            if d.planes:
                decided[prefix + "planes"] = ",".join(_plane_key(p) for p in d.planes)
            if d.chroma_refinement:
                decided[prefix + "chroma_refinement"] = d.chroma_refinement
    return decided


def _plane_key(p: job_pb2.DenoisePlaneReport) -> str:
    if not p.model:
        return f"{p.plane}:-"
    key = f"{p.plane}:{p.model}@{p.model_version}/{p.resolution:g}/x{p.passes}/s{p.sigma:g}"
    if p.blend_model:
        key += f"+{p.blend_model}@{p.blend_model_version}*{p.blend_weight:g}"
    return key


def _attach(
    completed: events_pb2.TaskCompleted,
    task: events_pb2.Task,
    index: int,
    key: str,
    output: job_pb2.Output,
) -> None:
    """Put output `index` where the event carries it: rendition `index` of the task in
    rendition_outputs (with its index and name), a plain stage's one output as output_key and
    output."""
    if task.renditions:
        output.index = index
        output.rendition = task.renditions[index].name
        completed.rendition_outputs.append(events_pb2.RenditionOutput(key=key, output=output))
    else:
        completed.output_key = key
        completed.output.CopyFrom(output)


async def _all(coros: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run `coros` side by side; their results in order. The first failure is raised as it is
    (not grouped) and cancels the others."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for pending in tasks:
            pending.cancel()


def output_specs(task: events_pb2.Task) -> list[bytes]:
    """The spec of each output of a task: the image's, or each rendition's in order."""
    if task.renditions:
        return [rendition_spec(task, r.name) for r in task.renditions]
    return [stage_spec(task)]


def output_operations(task: events_pb2.Task, index: int) -> list[operations_pb2.Operation]:
    """The operations that make output `index` of a task, as sent."""
    ops = list(task.operations)
    if task.renditions:
        ops.extend(task.renditions[index].operations)
    return ops


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
    stack: AsyncExitStack,
    settings: WorkerSettings,
    process: Processor,
    *,
    resolve: Resolver | None = None,
    reads_input: bool = False,
) -> Consumer:
    """Connect a worker service to NATS and object storage and return its ready consumer.

    Resources are closed by `stack`, after the consumer has drained.
    """
    bus = await Bus.connect(
        settings.nats_url,
        f"pixmesh-{settings.service_name}",
        stream_replicas=settings.stream_replicas,
        events=EventRetention.from_settings(settings),
    )
    stack.push_async_callback(bus.close)
    await bus.ensure_streams()
    storage = Storage.from_settings(settings)
    await storage.ensure_bucket()
    worker = TaskWorker(bus, storage, settings, process, resolve=resolve, reads_input=reads_input)
    consumer = worker.consumer()
    await consumer.setup()
    return consumer


def worker_loops(
    settings: WorkerSettings, consumer: Consumer, *more: Consumer
) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
    """A worker service's background loops: its consumers, its presence announcements and the
    watcher of its queues' depths (for /metrics), on the first consumer's connection."""
    consumers = (consumer, *more)
    return [
        *(c.run for c in consumers),
        Announcer.for_service(consumer.bus.nc, settings).run,
        metrics.queue_watcher(consumer.bus, [metrics.WatchedQueue.of(c) for c in consumers]),
    ]
