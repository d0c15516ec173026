"""Thin JetStream handler: an inference task (a run of Denoise operations) in, the image out."""

from __future__ import annotations

from pixmesh.events.v1 import events_pb2
from services.inference import errors
from services.inference.service import InferenceService
from services.runtime.worker import ImageResult, Processor, StageResult, monotonic_deadline


def processor(service: InferenceService) -> Processor:
    async def process(task: events_pb2.Task, data: bytes) -> StageResult:
        ops = []
        for i, op in enumerate(task.operations):
            name = op.WhichOneof("op")
            if name != "denoise":
                raise errors.unsupported_operation(f"operations[{i}]", name or "")
            ops.append(op.denoise)
        deadline = monotonic_deadline(task)
        out = await service.denoise(data, ops, deadline=deadline)
        img = out.image
        return StageResult(
            image=ImageResult(
                data=img.data,
                format=img.format,
                content_type=img.content_type,
                extension=img.extension,
                width=img.width,
                height=img.height,
            ),
            reports=out.reports,
        )

    return process
