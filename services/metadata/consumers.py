"""Thin JetStream handler: a metadata task in, the extracted record out."""

from __future__ import annotations

from pixmesh.events.v1 import events_pb2
from services.metadata.service import MetadataService
from services.runtime.worker import Processor, StageResult


def processor(service: MetadataService) -> Processor:
    async def process(task: events_pb2.Task, data: bytes) -> StageResult:
        return StageResult(metadata=await service.extract_and_store(task.tenant_id, data))

    return process
