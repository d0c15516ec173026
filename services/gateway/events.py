"""What the gateway announces on the bus: an upload, so the metadata service can index it."""

from __future__ import annotations

from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from pixmesh.common.v1 import image_pb2
from pixmesh.events.v1 import events_pb2
from services.runtime.bus import IMAGE_UPLOADED_SUBJECT, Bus
from services.runtime.errors import Unavailable


class UploadEvents(Protocol):
    async def image_uploaded(self, tenant_id: str, image: image_pb2.Image) -> None: ...


class BusUploadEvents:
    """Publishes events.v1.ImageUploaded, deduplicated per tenant and content by JetStream."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def image_uploaded(self, tenant_id: str, image: image_pb2.Image) -> None:
        event_id = f"image.uploaded.{tenant_id}.{image.sha256}"
        now = Timestamp()
        now.GetCurrentTime()
        event = events_pb2.ImageUploaded(
            event_id=event_id, tenant_id=tenant_id, image=image, time=now
        )
        try:
            await self._bus.publish(
                IMAGE_UPLOADED_SUBJECT, event, msg_id=event_id, timeout=self._timeout_s
            )
        except Exception as exc:
            # nats-py raises timeouts, connection and JetStream errors of unrelated types.
            raise Unavailable(
                "the upload is stored but could not be announced for indexing; retry it",
                reason="EVENTS_UNAVAILABLE",
            ) from exc
