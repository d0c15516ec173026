"""Uploads: bytes in (streamed, raw or through a presigned PUT), checked, stored and announced;
an uploaded image's bytes back out.

The client of a presigned upload PUTs to a staging key of its tenant, `uploads/<tenant>/<upload_id>`;
registering reads it back and runs it through `upload`, exactly as an UploadImage would, then
deletes it. Staging objects never registered are deleted by `clean_expired_uploads`, run in the
background by CreateUploadUrl, a bounded batch at a time: SeaweedFS's S3 lifecycle rules only
expire whole days (through its filer TTL), far coarser than a URL's minutes, so the gateway does it
itself. An S3 bucket lifecycle rule on `uploads/` (1 day) is a good extra net in production, where
nothing may create uploads for a while.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pixmesh.common.v1 import image_pb2
from pixmesh.gateway.v1 import gateway_pb2
from services.gateway import errors, videos
from services.gateway.events import UploadEvents
from services.gateway.repository import GatewayRepository
from services.gateway.settings import GatewaySettings
from services.runtime.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    invalid,
)
from services.runtime.imageprobe import ProbeLimits, probe
from services.runtime.storage import Storage, input_key

log = logging.getLogger(__name__)

# Expired presigned uploads cleaned up per pass (one pass at a time, started by CreateUploadUrl).
CLEANUP_BATCH = 20


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str = ""
    filename: str = ""


def staging_key(tenant_id: str, upload_id: str) -> str:
    """Where a presigned upload's bytes wait for RegisterUpload."""
    return f"uploads/{tenant_id}/{upload_id}"


def too_large(size: int, limit: int, field: str | None = None) -> InvalidArgument:
    description = f"the image is {size} bytes; the limit is {limit}"
    if field is None:
        return InvalidArgument(message=description, reason="IMAGE_TOO_LARGE")
    return InvalidArgument(
        message=f"{field}: {description}",
        reason="IMAGE_TOO_LARGE",
        violations=(FieldViolation(field, description),),
    )


async def find_image(repo: GatewayRepository, tenant_id: str, image_id: str) -> image_pb2.Image:
    """One of the tenant's images, or INVALID_ARGUMENT (no id) / NOT_FOUND (IMAGE_NOT_FOUND)."""
    if not image_id:
        raise invalid("image_id", "required")
    image = await repo.get_image(tenant_id, image_id)
    if image is None:
        raise errors.image_not_found(image_id)
    return image


class Uploads:
    def __init__(
        self,
        settings: GatewaySettings,
        repo: GatewayRepository,
        storage: Storage,
        events: UploadEvents,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.storage = storage
        self.events = events
        self.limits = ProbeLimits(
            max_bytes=settings.max_input_bytes,
            max_pixels=settings.max_pixels,
            max_frames=settings.max_frames,
        )
        self.video_limits = videos.limits_of(settings)
        self._cleanup: asyncio.Task[int] | None = None

    async def collect(self, chunks: AsyncIterator[bytes]) -> bytes:
        """Join streamed chunks, failing as soon as the size limit is crossed (the larger of
        the image and video limits: the kind is known from the first bytes, the probe then
        applies the limit of that kind)."""
        buf = bytearray()
        limit = videos.largest_upload(self.settings)
        async for chunk in chunks:
            buf += chunk
            if len(buf) > limit:
                raise InvalidArgument(
                    message=f"the upload is larger than {limit} bytes",
                    reason="IMAGE_TOO_LARGE",
                )
        return bytes(buf)

    async def upload(self, tenant_id: str, upload: Upload) -> image_pb2.Image:
        if videos.is_video(upload.data):
            found = videos.image_of(await videos.probe(upload.data, self.video_limits))
            mime = found.content_type
        else:
            header = probe(upload.data, self.limits)
            mime = header.mime_type
            found = image_pb2.Image(
                format=header.format,
                width=header.width,
                height=header.height,
                frame_count=header.frame_count,
                orientation=header.orientation,
                content_type=header.mime_type,
            )
        sha = hashlib.sha256(upload.data).hexdigest()
        key = input_key(sha)

        async def store() -> None:
            if not await self.storage.exists(key):
                await self.storage.put(key, upload.data, mime)

        image = found
        image.size_bytes = len(upload.data)
        image.sha256 = sha
        image.filename = upload.filename[:255]
        saved = await self.repo.save_image(tenant_id, image, store)
        # Announced on every upload, repeats included: the event is what gets the image indexed
        # (metadata, search), and the upload is only answered once the event is in JetStream,
        # so a failed publish fails the upload and the client's retry announces it again.
        await self.events.image_uploaded(tenant_id, saved)
        return saved

    async def source(self, tenant_id: str, image_id: str) -> tuple[str, bytes]:
        """An uploaded image's bytes and content type (the tenant's images only)."""
        image = await find_image(self.repo, tenant_id, image_id)
        return image.content_type, await self.storage.get(input_key(image.sha256))

    # ---- presigned uploads ----------------------------------------------------------------

    async def create_upload_url(
        self, tenant_id: str, filename: str, size_bytes: int
    ) -> gateway_pb2.CreateUploadUrlResponse:
        limit = videos.largest_upload(self.settings)
        if size_bytes == 0:
            raise invalid("size_bytes", "required: the size of the file to upload, in bytes")
        if size_bytes > limit:
            raise too_large(size_bytes, limit, "size_bytes")
        self._start_cleanup()
        ttl = self.settings.upload_url_ttl_s
        upload_id = f"upl_{uuid.uuid4().hex}"
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
        await self.repo.create_upload(tenant_id, upload_id, filename[:255], size_bytes, expires_at)
        resp = gateway_pb2.CreateUploadUrlResponse(
            upload_id=upload_id,
            url=self.storage.presign_put(staging_key(tenant_id, upload_id), size_bytes, ttl),
            # Signed: the PUT must send exactly this length (S3 refuses anything else).
            headers={"Content-Length": str(size_bytes)},
        )
        resp.expires_at.FromDatetime(expires_at)
        return resp

    async def register_upload(self, tenant_id: str, upload_id: str) -> image_pb2.Image:
        if not upload_id:
            raise invalid("upload_id", "required")
        grace = self.settings.upload_register_grace_s
        pending = await self.repo.get_upload(tenant_id, upload_id, grace)
        if pending is None:
            raise errors.upload_not_found(upload_id)
        if pending.image_id is not None:  # a retry
            return await self._registered(tenant_id, pending.image_id)
        key = staging_key(tenant_id, upload_id)
        size = await self.storage.size(key)
        if size is None:
            raise errors.upload_missing(upload_id)
        if size > videos.largest_upload(self.settings):
            raise too_large(size, videos.largest_upload(self.settings))
        try:
            data = await self.storage.get(key)
        except NotFound:
            # Deleted since the HEAD: a concurrent RegisterUpload of the same id finished first.
            again = await self.repo.get_upload(tenant_id, upload_id, grace)
            if again is None or again.image_id is None:
                raise errors.upload_missing(upload_id) from None
            return await self._registered(tenant_id, again.image_id)
        image = await self.upload(tenant_id, Upload(data=data, filename=pending.filename))
        await self.repo.register_upload(tenant_id, upload_id, image.image_id)
        try:
            await self.storage.delete(key)
        except ServiceError:  # registered all the same; the expiry clean-up deletes it later
            log.warning("could not delete a staging object", extra={"key": key})
        return image

    async def _registered(self, tenant_id: str, image_id: str) -> image_pb2.Image:
        # Images are never deleted under a registered upload's row; IMAGE_NOT_FOUND: a bug.
        return await find_image(self.repo, tenant_id, image_id)

    def _start_cleanup(self) -> None:
        if self._cleanup is None or self._cleanup.done():
            self._cleanup = asyncio.create_task(self.clean_expired_uploads())

    async def clean_expired_uploads(self) -> int:
        """Delete up to CLEANUP_BATCH uploads past their expiry plus the grace period, staging
        objects first (registered ones too: deleting one that is gone costs nothing, and it
        catches a delete that failed at registration); returns how many. Never raises."""
        try:

            async def delete_objects(expired: list[tuple[str, str]]) -> None:
                await asyncio.gather(*(self.storage.delete(staging_key(*row)) for row in expired))

            grace = self.settings.upload_register_grace_s
            return await self.repo.remove_expired_uploads(grace, CLEANUP_BATCH, delete_objects)
        except Exception:
            log.warning("could not clean up expired uploads", exc_info=True)
            return 0
