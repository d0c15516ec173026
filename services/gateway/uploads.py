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
import io
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import IO

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
from services.runtime.imageprobe import (
    EMPTY_IMAGE,
    IMAGE_CORRUPT,
    UNSUPPORTED_FORMAT,
    ProbeLimits,
    probe,
)
from services.runtime.storage import Storage, input_key

log = logging.getLogger(__name__)

# Expired presigned uploads cleaned up per pass (one pass at a time, started by CreateUploadUrl).
CLEANUP_BATCH = 20
# A streamed or registered upload is kept in memory up to this size and in a temporary file
# beyond it: a video may be up to max_video_bytes (1 GiB), far more than a gateway should hold.
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024


class Spool:
    """Uploaded bytes as they arrive: hashed on the way, held as the received chunks up to
    SPOOL_MEMORY_BYTES and in a temporary file beyond. A video is probed and stored from the
    file; an image (at most max_input_bytes) is read back whole, as the image probe needs: from
    memory that is one join of the chunks (a single chunk is not copied at all), where writing
    them into a SpooledTemporaryFile and reading them back copied every byte twice."""

    def __init__(self, file: IO[bytes] | None = None) -> None:
        self._file = file
        self._chunks: list[bytes] = []
        self._sha = hashlib.sha256()
        self.size = 0

    @classmethod
    def of(cls, data: bytes) -> Spool:
        spool = cls()
        spool._chunks.append(data)  # the caller's bytes, not a copy
        spool._sha.update(data)
        spool.size = len(data)
        return spool

    @property
    def in_memory(self) -> bool:
        """Whether `read` is a join in memory (no file I/O: no need for a worker thread)."""
        return self._file is None

    @property
    def file(self) -> IO[bytes]:
        """The bytes as a file (at its start for a fresh spool; seek before reading)."""
        if self._file is None:
            self._file = io.BytesIO(self.read())
        return self._file

    def write(self, chunk: bytes) -> None:
        if self._file is None and self.size + len(chunk) <= SPOOL_MEMORY_BYTES:
            self._chunks.append(chunk)
        else:
            if self._file is None:  # over the memory limit: the chunks so far go to a file
                self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
                self._file.writelines(self._chunks)
                self._chunks = []
            self._file.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def head(self, size: int = 1024) -> bytes:
        if self._file is None:
            first = self._chunks[0] if self._chunks else b""
            return first[:size] if len(first) >= size else self.read()[:size]
        self._file.seek(0)
        return self._file.read(size)

    def read(self) -> bytes:
        if self._file is None:
            if len(self._chunks) != 1:
                self._chunks = [b"".join(self._chunks)]  # joined once, kept for the next read
            return self._chunks[0]
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._chunks = []

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Upload:
    data: bytes | Spool
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


# Content-Types of an HTML form: what `curl -F file=@photo.jpg` (the file wrapped in a multipart
# form) and `curl -d @photo.jpg` (a url-encoded form, CR and LF stripped) send. The bytes are
# then not the image, and the probe's "not an image" alone would send the caller looking at the
# file rather than at the request.
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def with_form_hint(exc: InvalidArgument, content_type: str) -> InvalidArgument:
    """`exc` (an upload the probe refused), with how to send the image when the request's
    Content-Type says the body is a form: the upload's body must be the file's bytes."""
    declared = content_type.split(";", 1)[0].strip().lower()
    if declared not in _FORM_TYPES or exc.reason not in (UNSUPPORTED_FORMAT, IMAGE_CORRUPT):
        return exc
    hint = (
        f" (the request's Content-Type is {declared}: the body must be the image's bytes "
        "themselves, not a form, e.g. curl --data-binary @photo.jpg -H 'content-type: "
        "image/jpeg')"
    )
    return replace(exc, message=exc.message + hint)


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

    async def collect(self, chunks: AsyncIterator[bytes]) -> Spool:
        """Spool streamed chunks (close the result), failing as soon as the size limit is
        crossed (the larger of the image and video limits: the kind is known from the first
        bytes, the probe then applies the limit of that kind)."""
        spool = Spool()
        limit = videos.largest_upload(self.settings)
        try:
            async for chunk in chunks:
                # A write past SPOOL_MEMORY_BYTES goes to disk: off the event loop.
                if spool.size + len(chunk) > SPOOL_MEMORY_BYTES:
                    await asyncio.to_thread(spool.write, chunk)
                else:
                    spool.write(chunk)
                if spool.size > limit:
                    raise InvalidArgument(
                        message=f"the upload is larger than {limit} bytes",
                        reason="IMAGE_TOO_LARGE",
                    )
        except BaseException:
            spool.close()
            raise
        return spool

    async def upload(self, tenant_id: str, upload: Upload) -> image_pb2.Image:
        data = upload.data
        spool = data if isinstance(data, Spool) else Spool.of(data)
        body: bytes | IO[bytes]
        if videos.is_video(spool.head()):
            # Probed and stored from the spool's file: a video is never held whole in memory.
            found = videos.image_of(await videos.probe(spool.file, self.video_limits))
            mime = found.content_type
            body = spool.file
        else:
            if spool.size > self.limits.max_bytes:  # before reading it back whole
                raise too_large(spool.size, self.limits.max_bytes)
            if isinstance(data, bytes):
                body = data
            elif spool.in_memory:  # a join in memory: not worth a worker thread
                body = spool.read()
            else:
                body = await asyncio.to_thread(spool.read)
            try:
                header = probe(body, self.limits)
            except InvalidArgument as exc:
                raise with_form_hint(exc, upload.content_type) from None
            mime = header.mime_type
            found = image_pb2.Image(
                format=header.format,
                width=header.width,
                height=header.height,
                frame_count=header.frame_count,
                orientation=header.orientation,
                content_type=header.mime_type,
            )
        sha = spool.sha256
        key = input_key(sha)

        async def store(known: bool) -> None:
            # Bytes no image has are put without a HEAD first: a new upload nearly always
            # brings new bytes, and the HEAD (a 404, an error span) cost the gateway ~2 ms of
            # CPU per upload. A source a batch copied from a prefix has no image row: it is
            # put again, the same bytes under the same key. Bytes an image has are put only
            # if storage lacks them.
            if known and await self.storage.exists(key):
                return
            if not isinstance(body, bytes):
                body.seek(0)
            await self.storage.put(key, body, mime)

        image = found
        image.size_bytes = spool.size
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
        if size_bytes == 0:  # unset, or an empty file: refused as a direct upload refuses it
            raise invalid(
                "size_bytes",
                "is 0: the image is empty (give the size of the file to upload, in bytes)",
                EMPTY_IMAGE,
            )
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
            spool = await self._spool_object(key)
        except NotFound:
            # Deleted since the HEAD: a concurrent RegisterUpload of the same id finished first.
            again = await self.repo.get_upload(tenant_id, upload_id, grace)
            if again is None or again.image_id is None:
                raise errors.upload_missing(upload_id) from None
            return await self._registered(tenant_id, again.image_id)
        with spool:
            image = await self.upload(tenant_id, Upload(data=spool, filename=pending.filename))
        await self.repo.register_upload(tenant_id, upload_id, image.image_id)
        try:
            await self.storage.delete(key)
        except ServiceError:  # registered all the same; the expiry clean-up deletes it later
            log.warning("could not delete a staging object", extra={"key": key})
        return image

    async def _spool_object(self, key: str) -> Spool:
        """A staging object read into a Spool chunk by chunk (not whole into memory)."""
        spool = Spool()

        def read(chunks: Iterator[bytes]) -> None:
            for chunk in chunks:
                spool.write(chunk)

        try:
            await asyncio.to_thread(read, self.storage.chunks(key))
        except Exception:
            spool.close()
            if await self.storage.exists(key):
                raise
            raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND") from None
        return spool

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
                await self.storage.delete_many([staging_key(*row) for row in expired])

            grace = self.settings.upload_register_grace_s
            return await self.repo.remove_expired_uploads(grace, CLEANUP_BATCH, delete_objects)
        except Exception:
            log.warning("could not clean up expired uploads", exc_info=True)
            return 0
