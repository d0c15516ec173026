"""The jobs service's batch, archive and storage-connection RPCs (issue 12): a part of the gRPC
adapter (JobsApi inherits it); convert, await one call, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pixmesh.jobs.v1 import batches_pb2 as pb
from services.jobs.batches import Batches
from services.jobs.connections import ConnectionStore
from services.runtime.errors import Unavailable, invalid
from services.runtime.server import Ctx


class BatchApi:
    _batches: Batches | None = None

    def enable_batches(self, batches: Batches) -> None:
        self._batches = batches

    @property
    def batches(self) -> Batches:
        if self._batches is None:
            raise Unavailable(message="batches are not enabled here", reason="UNAVAILABLE")
        return self._batches

    @property
    def connections(self) -> ConnectionStore:
        return self.batches.connections

    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: Ctx
    ) -> pb.CreateBatchResponse:
        batch, created = await self.batches.create(request)
        return pb.CreateBatchResponse(batch=batch, created=created)

    async def GetBatch(self, request: pb.GetBatchRequest, context: Ctx) -> pb.GetBatchResponse:
        return pb.GetBatchResponse(
            batch=await self.batches.get(request.tenant_id, request.batch_id)
        )

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: Ctx
    ) -> pb.ListBatchesResponse:
        batches, token = await self.batches.list_batches(
            request.tenant_id, request.page_size, request.page_token
        )
        return pb.ListBatchesResponse(batches=batches, next_page_token=token)

    async def WatchBatch(
        self, request: pb.WatchBatchRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchBatchResponse]:
        async for batch in self.batches.watch(request.tenant_id, request.batch_id):
            yield pb.WatchBatchResponse(batch=batch)

    async def ListBatchJobs(
        self, request: pb.ListBatchJobsRequest, context: Ctx
    ) -> pb.ListBatchJobsResponse:
        items, token = await self.batches.items(
            request.tenant_id,
            request.batch_id,
            request.page_size,
            request.page_token,
            request.state,
        )
        return pb.ListBatchJobsResponse(items=items, next_page_token=token)

    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: Ctx
    ) -> pb.CancelBatchResponse:
        return pb.CancelBatchResponse(
            batch=await self.batches.cancel(request.tenant_id, request.batch_id)
        )

    async def ListArchiveEntries(
        self, request: pb.ListArchiveEntriesRequest, context: Ctx
    ) -> pb.ListArchiveEntriesResponse:
        if request.batch_id:
            entries = await self.batches.archive_entries(request.tenant_id, request.batch_id)
        elif request.job_id:
            entries = await self.batches.job_archive_entries(request.tenant_id, request.job_id)
        else:
            raise invalid("job_id", "a job_id or a batch_id is required")
        return pb.ListArchiveEntriesResponse(entries=entries)

    async def CreateStorageConnection(
        self, request: pb.CreateStorageConnectionRequest, context: Ctx
    ) -> pb.CreateStorageConnectionResponse:
        conn = await self.connections.create(
            request.tenant_id,
            request.name,
            request.endpoint,
            request.bucket,
            request.region,
            request.credentials,
        )
        return pb.CreateStorageConnectionResponse(connection=conn)

    async def ListStorageConnections(
        self, request: pb.ListStorageConnectionsRequest, context: Ctx
    ) -> pb.ListStorageConnectionsResponse:
        return pb.ListStorageConnectionsResponse(
            connections=await self.connections.list_connections(request.tenant_id)
        )

    async def DeleteStorageConnection(
        self, request: pb.DeleteStorageConnectionRequest, context: Ctx
    ) -> pb.DeleteStorageConnectionResponse:
        await self.connections.delete(request.tenant_id, request.connection_id)
        return pb.DeleteStorageConnectionResponse()
