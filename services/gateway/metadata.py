"""The public metadata queries: resolve the caller's image, ask the metadata service.

The gateway owns image ids (gateway.images); the metadata service keys its rows by (tenant,
sha256) and keeps the image id beside them, so search and similarity answer in one query there.
Every call carries the authenticated tenant id, and the metadata service scopes every query by
it; GetImageMetadata and FindSimilar also check here first that the image is the caller's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final, Protocol

from pixmesh.common.v1 import image_pb2, metadata_pb2
from pixmesh.gateway.v1 import gateway_pb2
from pixmesh.metadata.v1 import metadata_pb2 as mpb
from pixmesh.metadata.v1 import metadata_pb2_grpc
from services.gateway import errors
from services.gateway.events import UploadEvents
from services.runtime.errors import FailedPrecondition, ServiceError, invalid, rpc_errors

log = logging.getLogger(__name__)

# Fields of SearchImagesRequest copied into the filter only when set (messages and optionals).
_OPTIONAL: Final = (
    "taken_after",
    "taken_before",
    "min_latitude",
    "max_latitude",
    "min_longitude",
    "max_longitude",
)


class ImageLookup(Protocol):
    async def get_image(self, tenant_id: str, image_id: str) -> image_pb2.Image | None: ...


class MetadataQueries:
    def __init__(
        self,
        images: ImageLookup,
        metadata: metadata_pb2_grpc.MetadataServiceStub,
        events: UploadEvents,
    ) -> None:
        self.images = images
        self.metadata = metadata
        self.events = events

    async def get(
        self, tenant_id: str, image_id: str, timeout: float
    ) -> metadata_pb2.ImageMetadata:
        image = await self._image(tenant_id, image_id)
        request = mpb.GetImageMetadataRequest(tenant_id=tenant_id, sha256=image.sha256)
        async with self._pending(tenant_id, image):
            resp: mpb.GetImageMetadataResponse = await self.metadata.GetImageMetadata(
                request, timeout=timeout
            )
        return resp.metadata

    async def search(
        self, tenant_id: str, request: gateway_pb2.SearchImagesRequest, timeout: float
    ) -> gateway_pb2.SearchImagesResponse:
        internal = mpb.SearchImagesRequest(
            tenant_id=tenant_id,
            filter=search_filter(request),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        with rpc_errors():
            resp: mpb.SearchImagesResponse = await self.metadata.SearchImages(
                internal, timeout=timeout
            )
        return gateway_pb2.SearchImagesResponse(
            images=resp.images, next_page_token=resp.next_page_token
        )

    async def similar(
        self, tenant_id: str, request: gateway_pb2.FindSimilarRequest, timeout: float
    ) -> gateway_pb2.FindSimilarResponse:
        image = await self._image(tenant_id, request.image_id)
        if image.kind == image_pb2.Image.VIDEO:
            raise FailedPrecondition(
                message="a video has no perceptual hash: compare a still of it (video_frames)",
                reason="NO_PERCEPTUAL_HASH",
            )
        internal = mpb.FindSimilarRequest(
            tenant_id=tenant_id, sha256=image.sha256, page_size=request.page_size
        )
        if request.HasField("max_distance"):
            internal.max_distance = request.max_distance
        async with self._pending(tenant_id, image):
            resp: mpb.FindSimilarResponse = await self.metadata.FindSimilar(
                internal, timeout=timeout
            )
        return gateway_pb2.FindSimilarResponse(images=resp.images)

    async def preview(
        self, tenant_id: str, image_id: str, max_size: int, timeout: float
    ) -> mpb.GetImagePreviewResponse:
        """A small WEBP of the caller's image (the metadata service renders and keeps it)."""
        image = await self._image(tenant_id, image_id)
        if image.kind == image_pb2.Image.VIDEO:
            # The metadata service decodes images only: it would read the whole video (up to
            # max_video_bytes) into memory and answer that the image cannot be decoded.
            raise FailedPrecondition(
                message="a video has no preview: make a still of it with a video_frames or "
                "video_sheet job",
                reason="UNSUPPORTED_OPERATION",
            )
        internal = mpb.GetImagePreviewRequest(sha256=image.sha256, max_size=max_size)
        with rpc_errors():
            resp: mpb.GetImagePreviewResponse = await self.metadata.GetImagePreview(
                internal, timeout=timeout
            )
        return resp

    async def _image(self, tenant_id: str, image_id: str) -> image_pb2.Image:
        if not image_id:
            raise invalid("image_id", "required")
        image = await self.images.get_image(tenant_id, image_id)
        if image is None:
            raise errors.image_not_found(image_id)
        return image

    @contextlib.asynccontextmanager
    async def _pending(self, tenant_id: str, image: image_pb2.Image) -> AsyncIterator[None]:
        """Map "no metadata yet" to METADATA_PENDING, and announce the upload again: if its
        first event was lost, this read is what gets it indexed (duplicates are harmless)."""
        try:
            with rpc_errors():
                yield
        except ServiceError as err:
            if err.reason != "METADATA_NOT_FOUND":
                raise
            try:
                await self.events.image_uploaded(tenant_id, image)
            except ServiceError:
                log.warning("could not re-announce an unindexed upload")
            raise errors.metadata_pending(image.image_id) from err


def search_filter(request: gateway_pb2.SearchImagesRequest) -> metadata_pb2.ImageSearchFilter:
    """The public request's filter fields (same names as the filter's) as the internal filter."""
    f = metadata_pb2.ImageSearchFilter(
        camera_make=request.camera_make,
        camera_model=request.camera_model,
        min_width=request.min_width,
        max_width=request.max_width,
        min_height=request.min_height,
        max_height=request.max_height,
        formats=request.formats,
    )
    for name in _OPTIONAL:
        if not request.HasField(name):
            continue
        value = getattr(request, name)
        if isinstance(value, float):
            setattr(f, name, value)
        else:
            getattr(f, name).CopyFrom(value)
    return f
