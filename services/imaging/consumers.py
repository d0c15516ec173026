"""Thin JetStream handler: an imaging task in, the encoded image out."""

from __future__ import annotations

from pixmesh.events.v1 import events_pb2
from services.imaging.service import ImagingProcessor
from services.runtime.worker import ImageResult, Processor, StageResult, monotonic_deadline


def processor(imaging: ImagingProcessor) -> Processor:
    async def process(task: events_pb2.Task, data: bytes) -> StageResult:
        deadline = monotonic_deadline(task)
        r = await imaging.process(data, task.operations, deadline)
        return StageResult(
            image=ImageResult(
                data=r.data,
                format=r.format,
                content_type=r.content_type,
                extension=r.extension,
                width=r.width,
                height=r.height,
            )
        )

    return process
