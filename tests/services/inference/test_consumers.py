from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from pixmesh.common.v1.operations_pb2 import Denoise, Operation, Resize
from pixmesh.events.v1 import events_pb2
from services.inference.consumers import processor
from services.inference.service import InferenceService
from services.runtime.errors import DeadlineExceeded, InvalidArgument
from tests.services.inference.conftest import add_noise, decode, encode, scene


async def test_a_task_becomes_an_image_and_reports(service: InferenceService) -> None:
    process = processor(service)
    task = events_pb2.Task(task_id="job_1.0", operations=[Operation(denoise=Denoise(auto=True))])
    result = await process(task, encode(add_noise(scene(), 10)))
    assert result.image is not None
    assert (result.image.width, result.image.height, result.image.extension) == (64, 48, "png")
    assert decode(result.image.data).shape == (48, 64, 3)
    [report] = result.reports
    assert report.WhichOneof("report") == "denoise" and report.denoise.model == "dncnn6-n-int8"


async def test_a_task_with_a_foreign_operation_is_refused(service: InferenceService) -> None:
    task = events_pb2.Task(operations=[Operation(resize=Resize(width=10))])
    with pytest.raises(InvalidArgument) as exc:
        await processor(service)(task, b"")
    assert exc.value.reason == "UNSUPPORTED_OPERATION"


async def test_the_job_deadline_applies(service: InferenceService) -> None:
    task = events_pb2.Task(operations=[Operation(denoise=Denoise())])
    task.deadline.CopyFrom(Timestamp(seconds=1))
    with pytest.raises(DeadlineExceeded):
        await processor(service)(task, encode(add_noise(scene(), 10)))
