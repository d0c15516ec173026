import asyncio
import itertools
import os
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Resize
from services.imaging import service
from services.imaging.errors import DEADLINE_EXCEEDED, IMAGE_CORRUPT
from services.imaging.isolation import ProcessPool
from services.imaging.limits import Limits
from services.imaging.service import ImagingProcessor
from services.runtime.errors import DeadlineExceeded, InvalidArgument

from .samples import decode, encode, ops, scene


async def test_process_runs_the_pipeline_in_a_child_and_traces_its_steps(
    pool: ProcessPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(service, "_tracer", provider.get_tracer("test"))
    processor = ImagingProcessor(pool, Limits())

    result = (
        await processor.process(
            encode(scene(), "PNG"), ops(Resize(width=32), Convert(format=image_pb2.WEBP)), None
        )
    ).image

    assert decode(result.data).size == (32, 24)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    top = spans["imaging.pipeline"]
    assert top.attributes is not None
    assert top.attributes["pixmesh.child.pid"] != os.getpid()  # ran in a child
    assert top.attributes["pixmesh.output.width"] == 32
    # The steps are events of the pipeline span (not spans), in order, each with its duration.
    assert list(spans) == ["imaging.pipeline"]
    steps = top.events
    assert {e.name for e in steps} >= {"imaging.probe", "imaging.decode", "imaging.op0.resize"}
    assert top.start_time is not None and top.end_time is not None
    for step, after in itertools.pairwise(steps):
        assert step.attributes is not None and step.attributes["pixmesh.duration_ms"] >= 0
        assert top.start_time <= step.timestamp <= after.timestamp <= top.end_time


async def test_default_format(pool: ProcessPool) -> None:
    processor = ImagingProcessor(pool, Limits(), default_format=image_pb2.PNG)
    result = (await processor.process(encode(scene(), "JPEG"), [], None)).image
    assert result.format == image_pb2.PNG
    result = (
        await processor.process(encode(scene(), "JPEG"), [], None, default_format=image_pb2.WEBP)
    ).image
    assert result.format == image_pb2.WEBP


async def test_errors_reach_the_caller(pool: ProcessPool) -> None:
    processor = ImagingProcessor(pool, Limits())
    with pytest.raises(InvalidArgument) as err:
        await processor.process(b"\x89PNG\r\n\x1a\n" + bytes(40), [], None)
    assert err.value.reason == IMAGE_CORRUPT
    with pytest.raises(DeadlineExceeded) as late:
        await processor.process(encode(scene(), "PNG"), [], time.monotonic() - 0.1)
    assert late.value.reason == DEADLINE_EXCEEDED


async def test_the_loop_stays_responsive(pool: ProcessPool) -> None:
    processor = ImagingProcessor(pool, Limits())
    data = encode(scene(2000, 1500), "PNG")
    task = asyncio.create_task(processor.process(data, ops(Resize(width=100)), None))
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.001)
        ticks += 1
    await task
    assert ticks > 1


def test_capabilities(pool: ProcessPool) -> None:
    caps = ImagingProcessor(pool, Limits(max_operations=3)).capabilities()
    assert caps.limits.max_operations == 3
    assert {op.name for op in caps.operations} >= {"resize", "crop", "rotate", "flip", "convert"}
