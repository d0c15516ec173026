"""TaskWorker with renditions: one stored image each, reported in order (in-memory bus and S3)."""

import hashlib
from typing import Any

import pytest
from google.protobuf.message import Message

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime.bus import Delivery
from services.runtime.errors import Internal
from services.runtime.provenance import engine_fingerprint, work_digest
from services.runtime.provenance import output_key as key_of
from services.runtime.settings import WorkerSettings
from services.runtime.storage import ObjectHead
from services.runtime.worker import (
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
