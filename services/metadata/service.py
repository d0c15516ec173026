"""The metadata service: extract an image's metadata, keep it per tenant, read it back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Protocol

from pixmesh.common.v1 import image_pb2, metadata_pb2
from services.metadata import errors
from services.metadata.extract import extract
from services.runtime.telemetry import tracer

_tracer = tracer(__name__)


class MetadataStore(Protocol):
    """Where metadata is kept (Postgres in production: repository.MetadataRepository)."""

    async def upsert(self, tenant_id: str, md: metadata_pb2.ImageMetadata) -> None:
        """Insert or replace; writing the same metadata twice must be harmless."""

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata | None: ...


class MetadataService:
    def __init__(
        self,
        store: MetadataStore,
        executor: Executor,
        *,
        extractor: Callable[[bytes], metadata_pb2.ImageMetadata] = extract,
    ) -> None:
        self._store = store
        self._executor = executor
        self._extract = extractor

    async def extract_and_store(self, tenant_id: str, data: bytes) -> metadata_pb2.ImageMetadata:
        """Extract on the executor (Pillow is CPU work), then upsert.

        Raises InvalidArgument (IMAGE_CORRUPT / IMAGE_TOO_LARGE) for bytes that are not an image:
        a permanent failure, not worth a retry.
        """
        with _tracer.start_as_current_span("metadata.extract") as span:
            span.set_attribute("pixmesh.image.size_bytes", len(data))
            loop = asyncio.get_running_loop()
            md = await loop.run_in_executor(self._executor, self._extract, data)
            span.set_attribute("pixmesh.image.format", image_pb2.ImageFormat.Name(md.format))
            span.set_attribute("pixmesh.metadata.warnings", len(md.warnings))
        await self._store.upsert(tenant_id, md)
        return md

    async def get(self, tenant_id: str, sha256: str) -> metadata_pb2.ImageMetadata:
        """Raises InvalidArgument (INVALID_SHA256) or NotFound (METADATA_NOT_FOUND)."""
        md = await self._store.get(tenant_id, errors.checked_sha256(sha256))
        if md is None:
            raise errors.metadata_not_found()
        return md
