"""TaskWorker events: a fast task sends its TaskCompleted alone (with its attempt), a slow one
reports its start first, a failing one always does."""

import asyncio

import pytest

from pixmesh.events.v1 import events_pb2
from services.runtime.bus import Delivery
from services.runtime.errors import Unavailable
from services.runtime.settings import WorkerSettings
from services.runtime.worker import StageResult, TaskWorker
from tests.services.runtime.test_worker_renditions import SHARED, FakeBus, FakeStorage, image

ONE = image(b"png", 0, "png", 8)


def worker(
    process_s: float, *, fail: bool = False, delay_s: float = 0.25
) -> tuple[TaskWorker, FakeBus]:
    async def process(t: events_pb2.Task, data: bytes) -> StageResult:
        await asyncio.sleep(process_s)
        if fail:
            raise Unavailable(message="object storage unreachable")
        return StageResult(image=ONE)

    bus = FakeBus()
    settings = WorkerSettings(service_name="imaging", started_delay_s=delay_s)
    storage = FakeStorage({"inputs/abc": b"source"})
    return TaskWorker(bus, storage, settings, process, engine={}), bus  # type: ignore[arg-type]


def delivery(attempt: int) -> Delivery:
    t = events_pb2.Task(task_id="t1", job_id="job_1", input_key="inputs/abc", operations=SHARED)
    return Delivery(
        subject="pixmesh.task.imaging", data=t.SerializeToString(), headers={}, attempt=attempt
    )


def kinds(bus: FakeBus) -> list[str]:
    return [subject.rsplit(".", 1)[1] for subject, _, _ in bus.published]


async def test_a_fast_task_sends_one_event_carrying_its_attempt() -> None:
    w, bus = worker(0.0)
    await w.handle(delivery(3))
    assert kinds(bus) == ["completed"]
    assert bus.completed().attempt == 3


async def test_a_slow_task_reports_its_start_while_it_runs() -> None:
    w, bus = worker(0.2, delay_s=0.05)
    await w.handle(delivery(1))
    assert kinds(bus) == ["started", "completed"]
    started = bus.published[0][1]
    assert isinstance(started, events_pb2.TaskEvent) and started.started.attempt == 1
    assert bus.completed().attempt == 1


async def test_a_failing_task_reports_its_start_then_the_error_propagates() -> None:
    w, bus = worker(0.0, fail=True)
    with pytest.raises(Unavailable):
        await w.handle(delivery(2))
    assert kinds(bus) == ["started"]
    # A delay of 0: the start is reported before the work, as before.
    w, bus = worker(0.0, delay_s=0)
    await w.handle(delivery(1))
    assert kinds(bus) == ["started", "completed"]
