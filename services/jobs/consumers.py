"""Thin JetStream handler: worker events in, state machine out."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pixmesh.events.v1 import events_pb2
from services.jobs.service import JobsService
from services.jobs.settings import JobsSettings
from services.runtime import bus as busmod
from services.runtime.bus import Bus, Consumer, Delivery
from services.runtime.errors import InvalidArgument, ServiceError

log = logging.getLogger(__name__)


def task_events_consumer(
    bus: Bus,
    service: JobsService,
    settings: JobsSettings,
    applied: Callable[[events_pb2.TaskEvent], None] | None = None,
) -> Consumer:
    """`applied` is told of each event once it was applied (the batch feeder's wake-up:
    services/jobs/batches.py `Batches.task_event`)."""

    async def handle(delivery: Delivery) -> None:
        try:
            event = events_pb2.TaskEvent.FromString(delivery.data)
        except Exception as exc:
            raise InvalidArgument(message="malformed task event", reason="BAD_EVENT") from exc
        await service.apply_event(event)
        if applied is not None:
            applied(event)

    async def give_up(delivery: Delivery, err: ServiceError) -> None:
        # An event we cannot apply is kept for inspection; the job's deadline reaper makes sure
        # the job itself does not hang.
        log.error("dropping task event", extra={"reason": err.reason, "subject": delivery.subject})
        await bus.publish_raw(
            busmod.dlq_subject("jobs"), delivery.data, headers=delivery.headers, inject_trace=False
        )

    return Consumer(
        bus,
        stream=busmod.EVENTS_STREAM,
        durable="jobs-task-events",
        subject=busmod.task_event_subject("*"),
        handler=handle,
        on_give_up=give_up,
        **busmod.consumer_limits(settings),
    )
