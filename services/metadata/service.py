"""The metadata service: extract an image's metadata, keep it per tenant, search it.

Two paths write: every upload (the gateway's ImageUploaded event, `index_upload`) and the
extract_metadata job op (`extract_and_store`). Both upsert the same row, so either order and any
number of redeliveries leave one record. Every read takes the tenant id and passes it to the
store, which scopes every query by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import errors, hashes, search, video
from services.metadata.extract import extract
from services.runtime import metrics
from services.runtime.errors import InvalidArgument, NotFound, invalid
from services.runtime.storage import input_key
from services.runtime.telemetry import tracer

if TYPE_CHECKING:
    # The store's port is the Postgres repository's own interface (unit tests pass an in-memory
    # fake of it): a Protocol beside it would repeat every signature.
    from services.metadata.repository import MetadataRepository as MetadataStore

_tracer = tracer(__name__)
# A video's presigned URL only has to outlive the header probe.
_VIDEO_URL_TTL_S = 300


class ImageSource(Protocol):
    """Where uploaded bytes are read from (object storage: runtime.storage.Storage)."""

    async def get(self, key: str) -> bytes: ...

    async def size(self, key: str) -> int | None: ...

    def presign_get(self, key: str, content_type: str, expires_s: int) -> str: ...


class MetadataService:
    def __init__(
        self,
        store: MetadataStore,
        executor: Executor,
        *,
        images: ImageSource | None = None,
        strip_gps: bool = False,
        extractor: Callable[[bytes], metadata_pb2.ImageMetadata] = extract,
    ) -> None:
        self._store = store
        self._executor = executor
        self._images = images
        self._strip_gps = strip_gps
        self._extract = extractor

    # ---- writes ---------------------------------------------------------------------------

    async def delete(
        self, tenant_id: str, sha256: str, all_images: bool, sha256s: Sequence[str] = ()
    ) -> int:
        """Erase one image's metadata (and so its similarity entry), several (`sha256s`), or
        every image's of the tenant; idempotent."""
        tenant_id = errors.checked_tenant(tenant_id)
        if all_images:
            return await self._store.delete(tenant_id, None)
        if sha256s:
            if sha256 or any(len(s) != 64 for s in sha256s):
                raise invalid("sha256s", "64 hex characters each, and not with sha256")
            return await self._store.delete(tenant_id, list(sha256s))
        if len(sha256) != 64:
            raise invalid("sha256", "64 hex characters, or all_images")
        return await self._store.delete(tenant_id, [sha256])

    async def extract_and_store(
        self, tenant_id: str, data: bytes, source: image_pb2.Image | None = None
    ) -> metadata_pb2.ImageMetadata:
        """Extract on the executor (Pillow is CPU work), then upsert. `source` is the job's
        uploaded image: when `data` is its bytes, the row is linked to its image id.

        Raises InvalidArgument (IMAGE_CORRUPT / IMAGE_TOO_LARGE) for bytes that are not an image:
        a permanent failure, not worth a retry.
        """
        md = await self._extract_with_policy(data)
        if source is not None and source.sha256 == md.sha256:
            await self._store.upsert(tenant_id, md, source.image_id, _uploaded_at(source))
        else:
            await self._store.upsert(tenant_id, md)
        return md

    async def index_upload(self, tenant_id: str, image: image_pb2.Image) -> None:
        """Extract and store the metadata of a just-uploaded image (the ImageUploaded event).

        An image that cannot be read still gets a record: the gateway's header facts and a
        warning, so a client asking for it learns why instead of waiting forever.
        """
        if self._images is None:
            raise RuntimeError("index_upload needs an image source")
        tenant_id = errors.checked_tenant(tenant_id)
        errors.checked_sha256(image.sha256)
        key = input_key(image.sha256)
        try:
            if image.kind == image_pb2.Image.VIDEO:
                md = await self._extract_video(key, image)
            else:
                md = await self._extract_with_policy(await self._images.get(key))
        except NotFound:
            md = _unreadable(image, "image: the uploaded bytes are no longer in storage")
        except InvalidArgument as err:
            md = _unreadable(image, f"image: {err.message}")
        uploaded_at = _uploaded_at(image)
        await self._store.upsert(tenant_id, md, image.image_id or None, uploaded_at)
        if uploaded_at is not None:
            lag = (datetime.now(UTC) - uploaded_at).total_seconds()
            metrics.METADATA_INDEXING_LAG().observe(max(0.0, lag))

    async def _extract_video(self, key: str, image: image_pb2.Image) -> metadata_pb2.ImageMetadata:
        """A video's header read in place (range requests on a presigned URL), never the whole
        file into memory: videos go up to max_video_bytes."""
        assert self._images is not None
        if await self._images.size(key) is None:
            raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND")
        url = self._images.presign_get(key, image.content_type, _VIDEO_URL_TTL_S)
        return await self._extract_with_policy(
            image.size_bytes, partial(video.extract_video_at, url, image.sha256)
        )

    async def _extract_with_policy(
        self, data: bytes | int, extract: Callable[[], metadata_pb2.ImageMetadata] | None = None
    ) -> metadata_pb2.ImageMetadata:
        """`data` is the bytes to extract from, or their size when `extract` reads them itself."""
        with _tracer.start_as_current_span("metadata.extract") as span:
            size = data if isinstance(data, int) else len(data)
            span.set_attribute("pixmesh.image.size_bytes", size)
            loop = asyncio.get_running_loop()
            if extract is None:
                assert not isinstance(data, int)
                extract = partial(self._extract, data)
            md = await loop.run_in_executor(self._executor, extract)
            span.set_attribute("pixmesh.image.format", image_pb2.ImageFormat.Name(md.format))
            span.set_attribute("pixmesh.metadata.warnings", len(md.warnings))
        if self._strip_gps:
            strip_gps(md)
        return md

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata:
        """Raises InvalidArgument (INVALID_SHA256) or NotFound (METADATA_NOT_FOUND)."""
        tenant_id = errors.checked_tenant(tenant_id)
        md = await self._store.get(tenant_id, errors.checked_sha256(sha256))
        if md is None:
            raise errors.metadata_not_found()
        return self._redact(md)

    async def search(
        self,
        tenant_id: str,
        f: metadata_pb2.ImageSearchFilter,
        page_size: int,
        page_token: str,
    ) -> tuple[list[metadata_pb2.ImageRecord], str]:
        """One page of the tenant's images matching `f`, and the next page's token ("" at the
        end). Raises InvalidArgument for a bad filter, page size or token."""
        tenant_id = errors.checked_tenant(tenant_id)
        search.check_filter(f)
        if self._strip_gps and f.HasField("min_latitude"):
            # Rows stored before the policy was switched on may still have a position.
            raise errors.gps_disabled()
        size = search.page_size(page_size)
        after = search.decode_token(page_token, f) if page_token else None
        # One row more than asked says whether another page exists.
        rows = await self._store.search(tenant_id, f, size + 1, after)
        page = rows[:size]
        token = search.encode_token(page[-1][1], f) if len(rows) > size else ""
        for record, _ in page:
            self._redact(record.metadata)
        return [record for record, _ in page], token

    async def find_similar(
        self, tenant_id: str, sha256: str, max_distance: int | None, page_size: int
    ) -> list[metadata_pb2.SimilarImage]:
        """The tenant's images within `max_distance` pHash bits of this one, nearest first.

        Raises NotFound (METADATA_NOT_FOUND) when the image has no record yet and
        FailedPrecondition (NO_PERCEPTUAL_HASH) when its pixels could not be read.
        """
        distance = search.max_distance(max_distance)
        size = search.page_size(page_size)
        md = await self.get(tenant_id, sha256)
        if not md.perceptual_hashes.phash:
            raise errors.no_perceptual_hash()
        phash = hashes.from_hex(md.perceptual_hashes.phash)
        matches = await self._store.similar(
            tenant_id, phash, distance, size, md.sha256, search.band_probes(phash, distance)
        )
        for match in matches:
            self._redact(match.metadata)
        return matches

    def _redact(self, md: metadata_pb2.ImageMetadata) -> metadata_pb2.ImageMetadata:
        """Reads apply the strip_gps policy too: rows stored before it was on keep a position."""
        if self._strip_gps:
            strip_gps(md)
        return md


def strip_gps(md: metadata_pb2.ImageMetadata) -> None:
    """The strip_gps policy: no position is stored or returned, neither from EXIF nor XMP."""
    md.exif.ClearField("gps")
    if not md.exif.ListFields():
        md.ClearField("exif")
    for key in [k for k in md.xmp if _is_xmp_gps(k)]:
        del md.xmp[key]


def _is_xmp_gps(key: str) -> bool:
    # exif:GPSLatitude, exif:GPSLongitude, exif:GPSAltitude, ... and their struct members.
    return any(part.partition(":")[2].startswith("GPS") for part in key.split("/"))


def _uploaded_at(image: image_pb2.Image) -> datetime | None:
    return image.created_at.ToDatetime(tzinfo=UTC) if image.HasField("created_at") else None


def _unreadable(image: image_pb2.Image, warning: str) -> metadata_pb2.ImageMetadata:
    return metadata_pb2.ImageMetadata(
        format=image.format,
        width=image.width,
        height=image.height,
        frame_count=image.frame_count,
        size_bytes=image.size_bytes,
        sha256=image.sha256,
        warnings=[warning],
    )
