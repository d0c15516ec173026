"""The public batch, archive and storage-connection RPCs (issue 12): a part of the gRPC adapter
(GatewayApi inherits it), thin like the rest: authenticate, convert, await one call."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from pixmesh.gateway.v1 import batches_pb2 as pb
from pixmesh.summaries import summary_json
from services.gateway.auth import READ, WRITE
from services.gateway.batches import BatchRequests
from services.runtime.errors import Unavailable, invalid
from services.runtime.server import Ctx

ZIP = "application/zip"


class BatchApi:
    """Needs `_call` (GatewayApi's: the caller's tenant for a scope, and the call's deadline)
    and `batches`."""

    _batches: BatchRequests | None = None

    async def _call(self, context: Ctx, scope: str = READ) -> tuple[str, float]:
        raise NotImplementedError

    def enable_batches(self, batches: BatchRequests) -> None:
        self._batches = batches

    @property
    def batches(self) -> BatchRequests:
        if self._batches is None:
            raise Unavailable(message="batches are not enabled here", reason="UNAVAILABLE")
        return self._batches

    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: Ctx
    ) -> pb.CreateBatchResponse:
        tenant, timeout = await self._call(context, WRITE)
        return pb.CreateBatchResponse(
            batch=await self.batches.create_batch(tenant, request, timeout)
        )

    async def GetBatch(self, request: pb.GetBatchRequest, context: Ctx) -> pb.GetBatchResponse:
        tenant, timeout = await self._call(context)
        return pb.GetBatchResponse(
            batch=await self.batches.get_batch(tenant, request.batch_id, timeout)
        )

    async def GetBatchSummary(
        self, request: pb.GetBatchSummaryRequest, context: Ctx
    ) -> pb.GetBatchSummaryResponse:
        tenant, timeout = await self._call(context)
        batch = await self.batches.get_batch(tenant, request.batch_id, timeout)
        resp = pb.GetBatchSummaryResponse()
        # The document of pixmesh.summaries, as a folder run writes it (one format); "{}" while
        # the batch runs.
        doc = "{}"
        if batch.HasField("summary"):
            resp.summary.CopyFrom(batch.summary)
            doc = summary_json(resp.summary)
        resp.body.content_type = "application/json"
        resp.body.data = doc.encode()
        return resp

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: Ctx
    ) -> pb.ListBatchesResponse:
        tenant, timeout = await self._call(context)
        return await self.batches.list_batches(
            tenant, request.page_size, request.page_token, timeout
        )

    async def WatchBatch(
        self, request: pb.WatchBatchRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchBatchResponse]:
        tenant, _ = await self._call(context)
        async for batch in self.batches.watch_batch(tenant, request.batch_id):
            yield pb.WatchBatchResponse(batch=batch)

    async def ListBatchJobs(
        self, request: pb.ListBatchJobsRequest, context: Ctx
    ) -> pb.ListBatchJobsResponse:
        tenant, timeout = await self._call(context)
        return await self.batches.list_batch_jobs(tenant, request, timeout)

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: Ctx
    ) -> pb.CancelBatchResponse:
        tenant, timeout = await self._call(context, WRITE)
        return pb.CancelBatchResponse(
            batch=await self.batches.cancel_batch(tenant, request.batch_id, timeout)
        )

    async def DownloadJobArchive(
        self, request: pb.DownloadJobArchiveRequest, context: Ctx
    ) -> AsyncIterator[pb.DownloadJobArchiveResponse]:
        async for body in self._archive(context, job_id=request.job_id):
            yield pb.DownloadJobArchiveResponse(body=body)

    async def DownloadBatchArchive(
        self, request: pb.DownloadBatchArchiveRequest, context: Ctx
    ) -> AsyncIterator[pb.DownloadBatchArchiveResponse]:
        async for body in self._archive(context, batch_id=request.batch_id):
            yield pb.DownloadBatchArchiveResponse(body=body)

    async def _archive(self, context: Ctx, **source: str) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """The zip of a job's or a batch's outputs (`source`: its one id field), as HttpBody chunks."""
        tenant, timeout = await self._call(context)
        ((field, value),) = source.items()
        if not value:
            raise invalid(field, "required")
        async for chunk in self.batches.archive(tenant, timeout, **source):
            yield httpbody_pb2.HttpBody(content_type=ZIP, data=chunk)

    async def CreateStorageConnection(
        self, request: pb.CreateStorageConnectionRequest, context: Ctx
    ) -> pb.CreateStorageConnectionResponse:
        tenant, timeout = await self._call(context, WRITE)
        return pb.CreateStorageConnectionResponse(
            connection=await self.batches.create_connection(tenant, request, timeout)
        )

    async def ListStorageConnections(
        self, request: pb.ListStorageConnectionsRequest, context: Ctx
    ) -> pb.ListStorageConnectionsResponse:
        tenant, timeout = await self._call(context)
        return pb.ListStorageConnectionsResponse(
            connections=await self.batches.list_connections(tenant, timeout)
        )

    async def DeleteStorageConnection(
        self, request: pb.DeleteStorageConnectionRequest, context: Ctx
    ) -> pb.DeleteStorageConnectionResponse:
        tenant, timeout = await self._call(context, WRITE)
        await self.batches.delete_connection(tenant, request.connection_id, timeout)
        return pb.DeleteStorageConnectionResponse()
