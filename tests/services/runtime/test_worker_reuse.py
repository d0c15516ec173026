"""TaskWorker reuse: outputs found by key and metadata skip the work; records stay true."""

import hashlib
from typing import Any

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime.settings import WorkerSettings
from services.runtime.worker import Resolution, StageResult, TaskWorker
from tests.services.runtime.test_worker_renditions import (
    RENDITIONS,
    SHARED,
    FakeBus,
    FakeStorage,
    delivery,
    image,
)

ENGINE = {"pillow": "1", "default.webp_effort": "4"}


def task(**kwargs: Any) -> events_pb2.Task:
    return events_pb2.Task(
        task_id="t1",
        job_id="job_1",
        input_key="inputs/abc",
        source=image_pb2.Image(sha256="abc"),
        **kwargs,
    )


class Counting:
    """A processor that counts its calls and returns what it is told."""

    def __init__(self, result: StageResult) -> None:
        self.result = result
        self.calls = 0

    async def __call__(self, t: events_pb2.Task, data: bytes) -> StageResult:
        assert data == b"source"
        self.calls += 1
        return self.result


def worker(
    storage: FakeStorage, process: Counting, engine: dict[str, str] = ENGINE, exts: str = "webp"
) -> tuple[TaskWorker, FakeBus]:
    def resolve(t: events_pb2.Task) -> Resolution:
        return Resolution(engine, [[exts]] * (len(t.renditions) or 1))

    bus = FakeBus()
    w = TaskWorker(
        bus,  # type: ignore[arg-type]
        storage,  # type: ignore[arg-type]
        WorkerSettings(service_name="imaging"),
        process,
        resolve=resolve,
        engine={},
    )
    return w, bus


ONE = image(b"webp-bytes", image_pb2.WEBP, "webp", 80)


async def run(w: TaskWorker, bus: FakeBus, t: events_pb2.Task) -> events_pb2.TaskCompleted:
    bus.published.clear()
    await w.handle(delivery(t))
    return bus.completed()


async def test_a_second_identical_task_reuses_the_output_without_reading_or_working() -> None:
    storage = FakeStorage({"inputs/abc": b"source"})
    process = Counting(StageResult(image=ONE))
    w, bus = worker(storage, process)
    t = task(operations=SHARED)

    first = await run(w, bus, t)
    assert process.calls == 1 and storage.puts == 1
    # One HEAD (the lookup), none before the PUT of a key it saw missing.
    assert storage.heads == 1
    assert storage.meta[first.output_key]["sha256"] == hashlib.sha256(ONE.data).hexdigest()
    made = first.output.provenance
    assert not made.reused and made.process_seconds >= 0 and made.source_sha256 == "abc"
    assert dict(made.engine) == ENGINE and made.worker_service == "imaging"

    second = await run(w, bus, t)
    assert process.calls == 1 and storage.puts == 1  # nothing computed, nothing written
    assert second.output_key == first.output_key
    out, again = first.output, second.output
    assert (again.sha256, again.size_bytes, again.width, again.height, again.format) == (
        out.sha256,
        out.size_bytes,
        out.width,
        out.height,
        out.format,
    )
    assert again.content_type == "image/webp"
    assert again.provenance.reused and list(again.provenance.operations) == list(SHARED)


async def test_renditions_are_reused_only_when_every_one_exists() -> None:
    outputs = [
        ("thumb", image(b"t", image_pb2.WEBP, "webp", 100)),
        ("big", image(b"b", image_pb2.WEBP, "webp", 800)),
        ("big-too", image(b"b", image_pb2.WEBP, "webp", 800)),
    ]
    storage = FakeStorage({"inputs/abc": b"source"})
    process = Counting(StageResult(renditions=outputs))
    w, bus = worker(storage, process)
    t = task(operations=SHARED, renditions=RENDITIONS)
    first = await run(w, bus, t)
    keys = [r.key for r in first.rendition_outputs]
    del storage.objects[keys[1]]
    await run(w, bus, t)
    assert process.calls == 2 and storage.puts == 4  # only the missing one written again
    third = await run(w, bus, t)
    assert process.calls == 2
    assert [r.key for r in third.rendition_outputs] == keys
    assert [r.output.rendition for r in third.rendition_outputs] == ["thumb", "big", "big-too"]
    assert all(r.output.provenance.reused for r in third.rendition_outputs)


async def test_recompute_works_again_and_different_bytes_get_their_own_key() -> None:
    storage = FakeStorage({"inputs/abc": b"source"})
    process = Counting(StageResult(image=ONE))
    w, bus = worker(storage, process)
    first = await run(w, bus, task(operations=SHARED))

    same = await run(w, bus, task(operations=SHARED, recompute=True))
    assert process.calls == 2 and storage.puts == 1  # the same bytes: not written again
    assert same.output_key == first.output_key and not same.output.provenance.reused

    # An engine that is not deterministic: the stored bytes stay for whoever points at them.
    process.result = StageResult(image=image(b"other", image_pb2.WEBP, "webp", 80))
    other = await run(w, bus, task(operations=SHARED, recompute=True))
    assert other.output_key != first.output_key
    assert storage.objects[first.output_key] == ONE.data
    assert storage.objects[other.output_key] == b"other"
    assert other.output.sha256 == hashlib.sha256(b"other").hexdigest()


async def test_the_engine_and_what_the_stage_decided_are_part_of_the_key() -> None:
    storage = FakeStorage({"inputs/abc": b"source"})
    process = Counting(StageResult(image=ONE))
    w, bus = worker(storage, process)
    first = await run(w, bus, task(operations=SHARED))
    w2, bus2 = worker(storage, process, engine={**ENGINE, "default.webp_effort": "2"})
    second = await run(w2, bus2, task(operations=SHARED))
    assert process.calls == 2 and second.output_key != first.output_key

    report = job_pb2.OperationReport(
        index=0, denoise=job_pb2.DenoiseReport(model="dncnn6-n", model_version="1")
    )
    process.result = StageResult(image=ONE, reports=[report])
    decided = await run(w, bus, task(operations=SHARED, recompute=True))
    assert decided.output_key not in (first.output_key, second.output_key)
    made = decided.output.provenance
    assert (made.model, made.model_version) == ("dncnn6-n", "1")

    # Colour: what ran on each plane (model, resolution, passes, the σ it was given, a model
    # blended in and its weight) is part of it too.
    keys = set()
    blended = {}
    for passes, sigma, weight in ((1, 20.0, 0.0), (8, 20.0, 0.3), (8, 20.0, 0.4), (8, 21.5, 0.0)):
        planes = [
            job_pb2.DenoisePlaneReport(plane=name, model="dncnn6-n", model_version="1",
                                       resolution=1.0, passes=passes, sigma=sigma,
                                       blend_model="dncnn6-h" if weight else "",
                                       blend_model_version="1" if weight else "",
                                       blend_weight=weight)
            for name in ("Y", "C1", "C2")
        ]  # fmt: skip
        report = job_pb2.OperationReport(
            index=0,
            denoise=job_pb2.DenoiseReport(model="dncnn6-n", model_version="1", planes=planes),
        )
        process.result = StageResult(image=ONE, reports=[report])
        done = await run(w, bus, task(operations=SHARED, recompute=True))
        keys.add(done.output_key)
        blended[weight] = done.output.provenance.engine["op0.planes"]
    assert len(keys) == 4 and decided.output_key not in keys
    assert blended[0.3].startswith("Y:dncnn6-n@1/1/x8/s20+dncnn6-h@1*0.3,")
    assert done.output.provenance.engine["op0.planes"] == ",".join(
        f"{name}:dncnn6-n@1/1/x8/s21.5" for name in ("Y", "C1", "C2")
    )
    # The chroma refinement that ran after the models (the best path) too.
    report.denoise.chroma_refinement = "nlm/r8/p3/w0.049"
    process.result = StageResult(image=ONE, reports=[report])
    refined = await run(w, bus, task(operations=SHARED, recompute=True))
    assert refined.output_key not in keys | {done.output_key}
    assert refined.output.provenance.engine["op0.chroma_refinement"] == "nlm/r8/p3/w0.049"
    assert "op0.chroma_refinement" not in done.output.provenance.engine


async def test_an_object_without_its_sha256_is_not_trusted() -> None:
    storage = FakeStorage({"inputs/abc": b"source"})
    process = Counting(StageResult(image=ONE))
    w, bus = worker(storage, process)
    first = await run(w, bus, task(operations=SHARED))
    storage.meta[first.output_key] = {}  # e.g. written by something else
    again = await run(w, bus, task(operations=SHARED))
    assert process.calls == 2 and storage.puts == 2
    assert not again.output.provenance.reused
    assert storage.meta[first.output_key]["sha256"] == again.output.sha256


async def test_a_processor_without_a_resolver_always_works_and_checks_before_writing() -> None:
    storage = FakeStorage({"inputs/abc": b"source"})
    process = Counting(StageResult(image=ONE))
    bus = FakeBus()
    settings = WorkerSettings(service_name="inference")
    w = TaskWorker(bus, storage, settings, process, engine=ENGINE)  # type: ignore[arg-type]
    t = task(operations=[operations_pb2.Operation(denoise=operations_pb2.Denoise(auto=True))])
    first = await run(w, bus, t)
    second = await run(w, bus, t)
    assert process.calls == 2 and storage.puts == 1
    assert first.output_key == second.output_key
