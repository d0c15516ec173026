"""Renditions in the isolated child, with a span per rendition (its steps as events), and the task
handler's wiring."""

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Crop, Resize
from pixmesh.events.v1 import events_pb2
from services.imaging import service
from services.imaging.consumers import processor
from services.imaging.isolation import ProcessPool
from services.imaging.limits import Limits
from services.imaging.service import ImagingProcessor
from services.runtime.errors import InvalidArgument

from .samples import decode, encode, ops, scene


def rendition(name: str, *items: Any) -> operations_pb2.Rendition:
    return operations_pb2.Rendition(name=name, operations=ops(*items))


RENDITIONS = [
    rendition("thumb", Resize(width=32), Convert(format=image_pb2.WEBP)),
    rendition("medium", Resize(width=100)),
]


async def test_renditions_run_in_one_child_with_a_span_each(
    pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(service, "_tracer", provider.get_tracer("test"))
    imaging = ImagingProcessor(pool, Limits())

    result = await imaging.process(
        encode(scene(), "PNG"), ops(Resize(width=200)), None, renditions=RENDITIONS
    )

    got = dict(result.renditions)
    assert decode(got["thumb"].data).format == "WEBP" and decode(got["thumb"].data).size == (32, 24)
    assert (got["medium"].format, got["medium"].width, got["medium"].height) == (
        image_pb2.PNG,
        100,
        75,
    )
    spans = exporter.get_finished_spans()
    top = next(s for s in spans if s.name == "imaging.pipeline")
    assert top.attributes is not None and top.attributes["pixmesh.renditions"] == 2
    children = [s for s in spans if s.parent and s.parent.span_id == top.context.span_id]
    assert [s.name for s in children] == ["imaging.rendition"] * 2  # the steps are events
    shared = [e.name for e in top.events]
    assert shared.count("imaging.decode") == 1 and "imaging.op0.resize" in shared
    by_rendition = {}
    for span in children:
        assert span.attributes is not None
        by_rendition[span.attributes["pixmesh.rendition"]] = span
    thumb = by_rendition["thumb"]
    assert [e.name for e in thumb.events] == [
        "imaging.thumb.op0.resize",
        "imaging.thumb.op1.convert",
        "imaging.thumb.strip",
        "imaging.thumb.encode",
    ]
    assert thumb.attributes is not None and thumb.attributes["pixmesh.output.width"] == 32
    medium = by_rendition["medium"]
    assert top.events[-1].timestamp <= thumb.start_time  # after the shared steps
    for step in thumb.events:
        assert thumb.start_time is not None and thumb.end_time is not None
        assert step.attributes is not None and step.attributes["pixmesh.duration_ms"] >= 0
        assert thumb.start_time <= step.timestamp <= thumb.end_time
    assert thumb.end_time is not None and medium.start_time is not None
    assert thumb.end_time <= medium.start_time  # one after the other, in order


async def test_a_bad_rendition_fails_with_its_field_across_the_process_boundary(
    pool: ProcessPool,
) -> None:
    imaging = ImagingProcessor(pool, Limits())
    with pytest.raises(InvalidArgument) as err:
        await imaging.process(
            encode(scene(), "PNG"),
            [],
            None,
            renditions=[rendition("a"), rendition("b", Crop(x=400, width=10, height=10))],
        )
    assert err.value.violations[0].field.startswith("renditions[1].operations[0].crop.")


async def test_the_task_handler_makes_renditions_when_the_task_has_them(pool: ProcessPool) -> None:
    process = processor(ImagingProcessor(pool, Limits()))
    data = encode(scene(), "JPEG")
    task = events_pb2.Task(operations=ops(Resize(width=200)), renditions=RENDITIONS)
    stage = await process(task, data)
    assert stage.image is None
    assert [(name, img.format, img.width, img.extension) for name, img in stage.renditions] == [
        ("thumb", image_pb2.WEBP, 32, "webp"),
        ("medium", image_pb2.JPEG, 100, "jpg"),
    ]
    plain = await process(events_pb2.Task(operations=ops(Resize(width=200))), data)
    assert plain.renditions == () and plain.image is not None and plain.image.width == 200
