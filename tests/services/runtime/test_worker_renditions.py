"""TaskWorker with renditions: one stored image each, reported in order (in-memory bus and S3)."""

import asyncio
import hashlib
from typing import Any

import pytest
from google.protobuf.message import Message

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime.bus import Delivery
from services.runtime.errors import Internal, Unavailable
from services.runtime.provenance import engine_fingerprint, work_digest
from services.runtime.provenance import output_key as key_of
from services.runtime.settings import WorkerSettings
from services.runtime.storage import ObjectHead
from services.runtime.worker import (
    STORE_CONCURRENCY,
    ImageResult,
    StageResult,
    TaskWorker,
    rendition_spec,
    stage_spec,
)


def output_key(source_key: str, spec: bytes, ext: str) -> str:
    return key_of(work_digest(source_key, spec, engine_fingerprint()), ext)


class FakeBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, Message, str | None]] = []

    async def publish(self, subject: str, message: Message, *, msg_id: str | None = None) -> None:
        self.published.append((subject, message, msg_id))

    def completed(self) -> events_pb2.TaskCompleted:
        [event] = [m for s, m, _ in self.published if s == "pixmesh.event.task.completed"]
        assert isinstance(event, events_pb2.TaskEvent)
        return event.completed


class FakeStorage:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)
        self.types: dict[str, str] = {}
        self.meta: dict[str, dict[str, str]] = {}
        self.puts = 0
        self.heads = 0

    async def get(self, key: str) -> bytes:
        return self.objects[key]

    async def head(self, key: str) -> ObjectHead | None:
        self.heads += 1
        if key not in self.objects:
            return None
        return ObjectHead(len(self.objects[key]), self.types.get(key, ""), self.meta.get(key, {}))

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        self.puts += 1
        self.objects[key] = data
        self.types[key] = content_type
        self.meta[key] = dict(metadata or {})


def image(data: bytes, fmt: image_pb2.ImageFormat.ValueType, ext: str, width: int) -> ImageResult:
    return ImageResult(data, fmt, f"image/{ext}", ext, width, width // 2)


def op(**kwargs: Any) -> operations_pb2.Operation:
    return operations_pb2.Operation(**kwargs)


SHARED = [op(resize=operations_pb2.Resize(width=800))]
RENDITIONS = [
    operations_pb2.Rendition(
        name="thumb", operations=[op(resize=operations_pb2.Resize(width=100))]
    ),
    operations_pb2.Rendition(name="big"),
    # Same operations as "big": its own output all the same.
    operations_pb2.Rendition(name="big-too"),
]
OUTPUTS = [
    ("thumb", image(b"thumb-bytes", image_pb2.WEBP, "webp", 100)),
    ("big", image(b"big-bytes", image_pb2.JPEG, "jpg", 800)),
    ("big-too", image(b"big-bytes", image_pb2.JPEG, "jpg", 800)),
]


def task(**kwargs: Any) -> events_pb2.Task:
    return events_pb2.Task(
        task_id="task_1", job_id="job_1", stage_index=0, input_key="inputs/abc", **kwargs
    )


def worker(storage: FakeStorage, bus: FakeBus, result: StageResult) -> TaskWorker:
    async def process(t: events_pb2.Task, data: bytes) -> StageResult:
        assert data == b"source"
        return result

    return TaskWorker(bus, storage, WorkerSettings(service_name="imaging"), process)  # type: ignore[arg-type]


def delivery(t: events_pb2.Task) -> Delivery:
    return Delivery(
        subject="pixmesh.task.imaging", data=t.SerializeToString(), headers={}, attempt=1
    )


async def test_each_rendition_is_stored_and_reported_in_order() -> None:
    storage, bus = FakeStorage({"inputs/abc": b"source"}), FakeBus()
    t = task(operations=SHARED, renditions=RENDITIONS)
    await worker(storage, bus, StageResult(renditions=OUTPUTS)).handle(delivery(t))

    completed = bus.completed()
    assert completed.output_key == "" and not completed.HasField("output")
    keys = [r.key for r in completed.rendition_outputs]
    assert len(set(keys)) == 3
    for i, (out, (name, img)) in enumerate(zip(completed.rendition_outputs, OUTPUTS, strict=True)):
        assert out.key == output_key("inputs/abc", rendition_spec(t, name), img.extension)
        assert out.key.endswith("." + img.extension)
        assert storage.objects[out.key] == img.data
        assert storage.types[out.key] == img.content_type
        o = out.output
        assert (o.index, o.rendition, o.format, o.width, o.height) == (
            i,
            name,
            img.format,
            img.width,
            img.height,
        )
        assert (o.size_bytes, o.sha256) == (len(img.data), hashlib.sha256(img.data).hexdigest())
    # Not the key of the stage without renditions.
    assert output_key("inputs/abc", stage_spec(t), "jpg") not in keys


async def test_keys_are_deterministic_and_a_redelivery_stores_nothing_new() -> None:
    storage, bus = FakeStorage({"inputs/abc": b"source"}), FakeBus()
    t = task(operations=SHARED, renditions=RENDITIONS)
    w = worker(storage, bus, StageResult(renditions=OUTPUTS))
    await w.handle(delivery(t))
    first = [r.key for r in bus.completed().rendition_outputs]
    puts = storage.puts
    bus.published.clear()
    await w.handle(delivery(t))
    assert [r.key for r in bus.completed().rendition_outputs] == first
    assert storage.puts == puts == 3
    # The spec covers the stage's operations and every rendition (a sibling changes how the
    # source is decoded), so another job's renditions get other keys.
    other = task(operations=SHARED, renditions=RENDITIONS[:2])
    assert rendition_spec(other, "thumb") != rendition_spec(t, "thumb")
    changed = task(operations=[op(resize=operations_pb2.Resize(width=801))], renditions=RENDITIONS)
    assert rendition_spec(changed, "thumb") != rendition_spec(t, "thumb")


async def test_a_stage_without_renditions_is_stored_as_before() -> None:
    storage, bus = FakeStorage({"inputs/abc": b"source"}), FakeBus()
    t = task(operations=SHARED)
    img = image(b"one", image_pb2.PNG, "png", 10)
    await worker(storage, bus, StageResult(image=img)).handle(delivery(t))
    completed = bus.completed()
    spec = b"".join(o.SerializeToString(deterministic=True) for o in SHARED)
    assert completed.output_key == output_key("inputs/abc", spec, "png")
    assert completed.output.width == 10 and list(completed.rendition_outputs) == []


async def test_renditions_that_are_not_the_tasks_are_a_bug() -> None:
    storage, bus = FakeStorage({"inputs/abc": b"source"}), FakeBus()
    t = task(operations=SHARED, renditions=RENDITIONS)
    w = worker(storage, bus, StageResult(renditions=list(reversed(OUTPUTS))))
    with pytest.raises(Internal):
        await w.handle(delivery(t))
    assert storage.puts == 0


class SlowStorage(FakeStorage):
    """PUTs that yield to the loop (the first output's the longest) and count how many are in
    flight at once; `fail`: the data whose PUT raises."""

    def __init__(self, objects: dict[str, bytes], fail: bytes | None = None) -> None:
        super().__init__(objects)
        self.fail = fail
        self.in_flight = 0
        self.most = 0
        self.done: list[bytes] = []

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            for _ in range(20 - int(data.decode().removeprefix("r"))):
                await asyncio.sleep(0)
            if data == self.fail:
                raise Unavailable(message="storage down")
            await super().put(key, data, content_type, metadata)
            self.done.append(data)
        finally:
            self.in_flight -= 1


MANY = [operations_pb2.Rendition(name=f"r{i}") for i in range(7)]
MANY_OUTPUTS = [(r.name, image(r.name.encode(), image_pb2.PNG, "png", 10)) for r in MANY]


async def test_outputs_are_stored_side_by_side_bounded_and_reported_in_order() -> None:
    storage, bus = SlowStorage({"inputs/abc": b"source"}), FakeBus()
    t = task(operations=SHARED, renditions=MANY)
    await worker(storage, bus, StageResult(renditions=MANY_OUTPUTS)).handle(delivery(t))
    assert storage.most == STORE_CONCURRENCY
    # The later outputs finished first; the event lists them in the task's order all the same.
    assert storage.done[0] != b"r0"
    outputs = bus.completed().rendition_outputs
    assert [o.output.rendition for o in outputs] == [r.name for r in MANY]
    assert [storage.objects[o.key] for o in outputs] == [r.name.encode() for r in MANY]


async def test_a_failed_store_fails_the_task_with_its_own_error_and_stops_the_rest() -> None:
    storage, bus = SlowStorage({"inputs/abc": b"source"}, fail=b"r1"), FakeBus()
    t = task(operations=SHARED, renditions=MANY)
    with pytest.raises(Unavailable):
        await worker(storage, bus, StageResult(renditions=MANY_OUTPUTS)).handle(delivery(t))
    await asyncio.sleep(0)
    assert storage.in_flight == 0
    for _ in range(50):
        await asyncio.sleep(0)
    # Cancelled: the ones in flight that were not done yet, and those not started.
    assert not {b"r4", b"r5", b"r6"} & set(storage.done)
    assert not [s for s, _, _ in bus.published if s == "pixmesh.event.task.completed"]
