"""The upload announcement: what goes on the bus, and what a failed publish means."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.protobuf.message import Message
from PIL import Image

from pixmesh.common.v1 import image_pb2
from pixmesh.events.v1 import events_pb2
from services.gateway.events import IMAGE_UPLOADED_SUBJECT, BusUploadEvents
from services.gateway.service import GatewayService, Upload
from services.gateway.settings import GatewaySettings
from services.runtime.errors import Unavailable


class FakeBus:
    def __init__(self, error: Exception | None = None) -> None:
        self.published: list[tuple[str, Message, dict[str, Any]]] = []
        self.error = error

    async def publish(self, subject: str, message: Message, **kwargs: Any) -> None:
        if self.error:
            raise self.error
        self.published.append((subject, message, kwargs))


async def test_event_carries_the_image_and_deduplicates_per_tenant_and_content() -> None:
    bus = FakeBus()
    events = BusUploadEvents(bus, timeout_s=2.0)  # type: ignore[arg-type]
    image = image_pb2.Image(image_id="img_1", sha256="ab" * 32, width=4)

    await events.image_uploaded("tenant-a", image)
    await events.image_uploaded("tenant-b", image)

    (subject, event, kwargs), (_, other, other_kwargs) = bus.published
    assert isinstance(other, events_pb2.ImageUploaded) and other.tenant_id == "tenant-b"
    assert subject == IMAGE_UPLOADED_SUBJECT
    assert isinstance(event, events_pb2.ImageUploaded)
    assert (event.tenant_id, event.image) == ("tenant-a", image)
    assert event.HasField("time")
    assert kwargs == {"msg_id": f"image.uploaded.tenant-a.{image.sha256}", "timeout": 2.0}
    assert event.event_id == kwargs["msg_id"]
    assert other_kwargs["msg_id"] != kwargs["msg_id"]  # tenants never dedup each other


async def test_a_failed_publish_is_unavailable_so_the_upload_is_retried() -> None:
    events = BusUploadEvents(FakeBus(TimeoutError()), timeout_s=2.0)  # type: ignore[arg-type]

    with pytest.raises(Unavailable) as err:
        await events.image_uploaded("tenant-a", image_pb2.Image(sha256="ab" * 32))

    assert err.value.reason == "EVENTS_UNAVAILABLE"
    assert err.value.retryable


class Repo:
    async def save_image(
        self,
        tenant_id: str,
        image: image_pb2.Image,
        store: Callable[[bool], Awaitable[None]] | None = None,
    ) -> image_pb2.Image:
        if store is not None:
            await store(False)
        saved = image_pb2.Image()
        saved.CopyFrom(image)
        saved.image_id = "img_saved"
        return saved


class Storage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = data


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[str, image_pb2.Image]] = []
        self.fail = fail

    async def image_uploaded(self, tenant_id: str, image: image_pb2.Image) -> None:
        if self.fail:
            raise Unavailable("down", reason="EVENTS_UNAVAILABLE")
        self.seen.append((tenant_id, image))


def gateway(events: Recorder, storage: Storage) -> GatewayService:
    return GatewayService(
        GatewaySettings(),
        Repo(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # idempotency, jobs, capabilities: unused by uploads
        storage,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        events,
        None,  # type: ignore[arg-type]  # planner: unused by uploads
    )


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6)).save(out, "JPEG")
    return out.getvalue()


async def test_every_upload_is_announced_after_it_is_stored() -> None:
    events, storage = Recorder(), Storage()
    service = gateway(events, storage)

    image = await service.upload("tenant-a", Upload(jpeg()))
    again = await service.upload("tenant-a", Upload(jpeg()))

    assert events.seen == [("tenant-a", image), ("tenant-a", again)]
    assert image.image_id == "img_saved" and f"inputs/{image.sha256}" in storage.objects


async def test_an_upload_that_cannot_be_announced_fails_as_unavailable() -> None:
    storage = Storage()
    service = gateway(Recorder(fail=True), storage)

    with pytest.raises(Unavailable):
        await service.upload("tenant-a", Upload(jpeg()))
    assert storage.objects  # stored: the client's retry is cheap and announces it again
