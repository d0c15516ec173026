"""Thin JetStream handlers: a metadata task of a job, and the gateway's upload events."""

from __future__ import annotations

import logging
from typing import Final

from pixmesh.events.v1 import events_pb2
from services.metadata.service import MetadataService
from services.metadata.settings import MetadataSettings
from services.runtime import bus as busmod
from services.runtime.bus import IMAGE_UPLOADED_SUBJECT, Bus, Consumer, Delivery
from services.runtime.errors import InvalidArgument, ServiceError
from services.runtime.worker import Processor, StageResult

log = logging.getLogger(__name__)

UPLOADS_DURABLE: Final = "metadata-uploads"


def processor(service: MetadataService) -> Processor:
    async def process(task: events_pb2.Task, data: bytes) -> StageResult:
        md = await service.extract_and_store(task.tenant_id, data, task.source)
        return StageResult(metadata=md)

    return process


def upload_consumer(bus: Bus, settings: MetadataSettings, service: MetadataService) -> Consumer:
    """A durable consumer of every upload event: extract and store, idempotently."""

    async def handle(delivery: Delivery) -> None:
        try:
            event = events_pb2.ImageUploaded.FromString(delivery.data)
        except Exception as exc:
            raise InvalidArgument("malformed ImageUploaded event", reason="BAD_EVENT") from exc
        await service.index_upload(event.tenant_id, event.image)

    async def give_up(delivery: Delivery, err: ServiceError) -> None:
        # Nothing to report to: no job waits on an upload event. The image gets its record the
        # next time it is uploaded or asked for (the gateway announces it again).
        log.error(
            "upload event dropped",
            extra={"reason": err.reason, "attempt": delivery.attempt, "subject": delivery.subject},
        )

    return Consumer(
        bus,
        stream=busmod.EVENTS_STREAM,
        durable=UPLOADS_DURABLE,
        subject=IMAGE_UPLOADED_SUBJECT,
        handler=handle,
        on_give_up=give_up,
        **busmod.consumer_limits(settings),
    )
