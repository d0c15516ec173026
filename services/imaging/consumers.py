"""Thin JetStream handler: an imaging task in, the encoded image (or one per rendition) out."""

from __future__ import annotations

from pixmesh.events.v1 import events_pb2
from services.imaging.pipeline import PipelineResult
from services.imaging.service import ImagingProcessor
from services.runtime.worker import ImageResult, Processor, StageResult, monotonic_deadline


def processor(imaging: ImagingProcessor) -> Processor:
    async def process(task: events_pb2.Task, data: bytes) -> StageResult:
        deadline = monotonic_deadline(task)
        if task.renditions:
            results = await imaging.process_renditions(
                data, task.operations, task.renditions, deadline
            )
            return StageResult(
                renditions=[(name, image_result(r)) for name, r in results.renditions]
            )
        return StageResult(
            image=image_result(await imaging.process(data, task.operations, deadline))
        )

    return process


def image_result(r: PipelineResult) -> ImageResult:
    return ImageResult(
        data=r.data,
        format=r.format,
        content_type=r.content_type,
        extension=r.extension,
        width=r.width,
        height=r.height,
    )
