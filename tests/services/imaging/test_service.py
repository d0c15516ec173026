import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Resize
from services.imaging import service
from services.imaging.errors import DEADLINE_EXCEEDED, IMAGE_CORRUPT
from services.imaging.limits import Limits
from services.imaging.service import ImagingProcessor
from services.runtime.errors import DeadlineExceeded, InvalidArgument

from .samples import decode, encode, ops, scene

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imaging-test") as pool:
        yield pool


async def test_process_runs_the_pipeline_off_the_event_loop(
    executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, str] = {}
    real_run = service.run

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen["thread"] = threading.current_thread().name
        seen["request_id"] = REQUEST_ID.get()  # context (and so the trace) crossed over
        return real_run(*args, **kwargs)

    monkeypatch.setattr(service, "run", spy)
    REQUEST_ID.set("req-1")
    processor = ImagingProcessor(executor, Limits())
    result = await processor.process(
        encode(scene(), "PNG"), ops(Resize(width=32), Convert(format=image_pb2.WEBP)), None
    )
    assert decode(result.data).size == (32, 24)
    assert seen == {"thread": seen["thread"], "request_id": "req-1"}
    assert seen["thread"].startswith("imaging-test")


async def test_default_format(executor: ThreadPoolExecutor) -> None:
    processor = ImagingProcessor(executor, Limits(), default_format=image_pb2.PNG)
    result = await processor.process(encode(scene(), "JPEG"), [], None)
    assert result.format == image_pb2.PNG
    result = await processor.process(
        encode(scene(), "JPEG"), [], None, default_format=image_pb2.WEBP
    )
    assert result.format == image_pb2.WEBP


async def test_errors_reach_the_caller(executor: ThreadPoolExecutor) -> None:
    processor = ImagingProcessor(executor, Limits())
    with pytest.raises(InvalidArgument) as err:
        await processor.process(b"\x89PNG\r\n\x1a\n" + bytes(40), [], None)
    assert err.value.reason == IMAGE_CORRUPT
    with pytest.raises(DeadlineExceeded) as late:
        await processor.process(encode(scene(), "PNG"), [], time.monotonic() - 0.1)
    assert late.value.reason == DEADLINE_EXCEEDED


async def test_the_loop_stays_responsive(executor: ThreadPoolExecutor) -> None:
    processor = ImagingProcessor(executor, Limits())
    data = encode(scene(2000, 1500), "PNG")
    task = asyncio.create_task(processor.process(data, ops(Resize(width=100)), None))
    ticks = 0
    while not task.done():
        await asyncio.sleep(0.001)
        ticks += 1
    await task
    assert ticks > 1


def test_capabilities(executor: ThreadPoolExecutor) -> None:
    caps = ImagingProcessor(executor, Limits(max_operations=3)).capabilities()
    assert caps.limits.max_operations == 3
    assert {op.name for op in caps.operations} == {"resize", "crop", "rotate", "flip", "convert"}
