"""Batches, storage connections and zip archives through the gateway (issue 12).

The gateway checks the batch's pipeline once (presets expanded, shape, availability, parameters:
the same checks as CreateJob's coarse path; each image's exact checks run in its job), resolves a
list of image ids to the tenant's images, and forwards to the jobs service, which owns batches
and feeds their jobs. Archives are streamed here from object storage (services/gateway/archives.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from pixmesh.common.v1 import batch_pb2, image_pb2, job_pb2, operations_pb2
from pixmesh.gateway.v1 import batches_pb2 as gw
from pixmesh.jobs.v1 import batches_pb2 as jb
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.gateway.archives import stream_archive
from services.gateway.capabilities import CapabilityCache
from services.gateway.jobs import check_all_params, check_pipeline
from services.gateway.pipelines import expand, expand_renditions
from services.gateway.repository import GatewayRepository
from services.gateway.settings import GatewaySettings
from services.gateway.uploads import find_image
from services.gateway.webhooks import check_webhook
from services.runtime.errors import invalid, rpc_errors
from services.runtime.pipeline import check_renditions
from services.runtime.routes import output_download_path
from services.runtime.storage import Storage
from services.runtime.video import check_video_job, job_renditions

MAX_IMAGE_IDS = 10_000


class BatchRequests:
    def __init__(
        self,
        settings: GatewaySettings,
        repo: GatewayRepository,
        jobs: jobs_pb2_grpc.JobsServiceStub,
        capabilities: CapabilityCache,
        storage: Storage,
        presets: dict[str, list[operations_pb2.Operation]],
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.jobs = jobs
        self.capabilities = capabilities
        self.storage = storage
        self.presets = presets

    async def _pipeline(
        self,
        preset: str,
        ops: Sequence[operations_pb2.Operation],
        renditions: Sequence[operations_pb2.Rendition],
    ) -> tuple[list[operations_pb2.Operation], list[operations_pb2.Rendition]]:
        pipeline = expand(self.presets, preset, ops)
        branches = expand_renditions(self.presets, renditions)
        for i, op in enumerate(pipeline):
            if op.WhichOneof("op") == "convert" and op.convert.auto:
                # Resolved per image from the caller's Accept header: a batch has none.
                raise invalid(f"operations[{i}].convert.auto", "not available in a batch")
        # The checks of CreateJob's coarse path; each image's exact checks run in its job.
        await check_pipeline(self.settings, self.capabilities, pipeline, branches)
        check_all_params(self.settings, pipeline, branches)
        if not pipeline and not branches:
            raise invalid("operations", "at least one operation, a preset or a rendition")
        return pipeline, branches

    async def create_batch(
        self, tenant_id: str, req: gw.CreateBatchRequest, timeout: float
    ) -> batch_pb2.Batch:
        if len(req.idempotency_key) > 255:
            raise invalid("idempotency_key", "at most 255 characters")
        webhook = req.webhook if req.HasField("webhook") else None
        if webhook is not None:
            await check_webhook(webhook, self.settings.webhook_allow_private, timeout)
        # The pipeline is checked before the source: the SDK's folder runs send a request with
        # no image first, to hear a refused pipeline before uploading (pixmesh/_folder.py).
        ops, renditions = await self._pipeline(req.preset, req.operations, req.renditions)
        out = jb.CreateBatchRequest(
            tenant_id=tenant_id,
            operations=ops,
            idempotency_key=req.idempotency_key,
            webhook=webhook,
        )
        kind = req.source.WhichOneof("kind")
        if kind == "images":
            ids = list(req.source.images.image_ids)
            if not ids or len(ids) > MAX_IMAGE_IDS:
                raise invalid("source.images.image_ids", f"1..{MAX_IMAGE_IDS} image ids")
            for image_id in ids:
                image = await find_image(self.repo, tenant_id, image_id)
                # As CreateJob: a video operation first, on videos only.
                check_video_job(ops, renditions, image.kind)
                out.images.append(image)
        elif kind == "storage":
            check_video_job(ops, renditions, image_pb2.Image.IMAGE)  # objects are taken as images
            out.source.CopyFrom(req.source.storage)
        else:
            raise invalid("source", "required: images or storage")
        # As CreateJob: a video_frames job's frames are its outputs (frame-1, frame-2, ...).
        runs = job_renditions(ops, renditions)
        check_renditions(runs, self.settings.max_renditions)
        out.renditions.extend(runs)
        if req.HasField("destination"):
            out.destination.CopyFrom(req.destination)
        with rpc_errors():
            resp: jb.CreateBatchResponse = await self.jobs.CreateBatch(out, timeout=timeout)
        return resp.batch

    async def get_batch(self, tenant_id: str, batch_id: str, timeout: float) -> batch_pb2.Batch:
        if not batch_id:
            raise invalid("batch_id", "required")
        req = jb.GetBatchRequest(tenant_id=tenant_id, batch_id=batch_id)
        with rpc_errors():
            resp: jb.GetBatchResponse = await self.jobs.GetBatch(req, timeout=timeout)
        return resp.batch

    async def list_batches(
        self, tenant_id: str, page_size: int, page_token: str, timeout: float
    ) -> gw.ListBatchesResponse:
        if page_size > 100:
            raise invalid("page_size", "at most 100")
        req = jb.ListBatchesRequest(tenant_id=tenant_id, page_size=page_size, page_token=page_token)
        with rpc_errors():
            resp: jb.ListBatchesResponse = await self.jobs.ListBatches(req, timeout=timeout)
        return gw.ListBatchesResponse(batches=resp.batches, next_page_token=resp.next_page_token)

    async def watch_batch(self, tenant_id: str, batch_id: str) -> AsyncIterator[batch_pb2.Batch]:
        if not batch_id:
            raise invalid("batch_id", "required")
        call = self.jobs.WatchBatch(jb.WatchBatchRequest(tenant_id=tenant_id, batch_id=batch_id))
        try:
            with rpc_errors():
                async for resp in call:
                    yield resp.batch
        finally:
            call.cancel()

    async def list_batch_jobs(
        self, tenant_id: str, req: gw.ListBatchJobsRequest, timeout: float
    ) -> gw.ListBatchJobsResponse:
        if req.page_size > 1000:
            raise invalid("page_size", "at most 1000")
        out = jb.ListBatchJobsRequest(
            tenant_id=tenant_id,
            batch_id=req.batch_id,
            page_size=req.page_size,
            page_token=req.page_token,
            state=req.state,
        )
        with rpc_errors():
            resp: jb.ListBatchJobsResponse = await self.jobs.ListBatchJobs(out, timeout=timeout)
        # A succeeded item's outputs linked as GetJob links them.
        for item in resp.items:
            for output in item.outputs:
                output.download_path = output_download_path(item.job_id, output.index)
        if req.output_urls:
            await self._sign_outputs(tenant_id, req.batch_id, resp.items, timeout)
        return gw.ListBatchJobsResponse(items=resp.items, next_page_token=resp.next_page_token)

    async def _sign_outputs(
        self, tenant_id: str, batch_id: str, items: Sequence[batch_pb2.BatchItem], timeout: float
    ) -> None:
        """A presigned GET URL on each listed output whose object the batch's archive entries
        name (one ListArchiveEntries for the page, not a GetOutput per output: a download
        through the gateway, or a GetOutputUrl, costs a request, the jobs service's lookup and,
        for DownloadOutput, the bytes through botocore, gRPC and Envoy; BENCHMARKS.md, "The
        batch's bytes off the gateway"). Entries are matched by the output's sha256: outputs are
        content-addressed by the work that made them, so two keys may hold the same bytes, and
        either gives them. An item whose job succeeded but which the batch's feeder had not
        settled yet has no entry: its outputs' keys are asked of the jobs service one by one
        (GetOutput), so that every listed output carries a URL."""
        outputs = [(item.job_id, output) for item in items for output in item.outputs]
        if not outputs:
            return
        req = jb.ListArchiveEntriesRequest(tenant_id=tenant_id, batch_id=batch_id)
        with rpc_errors():
            resp: jb.ListArchiveEntriesResponse = await self.jobs.ListArchiveEntries(
                req, timeout=timeout
            )
        keys = {entry.sha256: entry.key for entry in resp.entries if entry.sha256}

        async def key_of(job_id: str, output: job_pb2.Output) -> str:
            key = keys.get(output.sha256)
            if key is None:
                lookup = jobs_pb2.GetOutputRequest(
                    tenant_id=tenant_id, job_id=job_id, index=output.index
                )
                with rpc_errors():
                    answer: jobs_pb2.GetOutputResponse = await self.jobs.GetOutput(
                        lookup, timeout=timeout
                    )
                key = answer.key
            return key

        found = await asyncio.gather(*(key_of(job_id, output) for job_id, output in outputs))
        ttl = self.settings.download_url_ttl_s
        for (_, output), key in zip(outputs, found, strict=True):
            output.download_url = self.storage.presign_get(key, output.content_type, ttl)

    async def cancel_batch(self, tenant_id: str, batch_id: str, timeout: float) -> batch_pb2.Batch:
        req = jb.CancelBatchRequest(tenant_id=tenant_id, batch_id=batch_id)
        with rpc_errors():
            resp: jb.CancelBatchResponse = await self.jobs.CancelBatch(req, timeout=timeout)
        return resp.batch

    async def archive(
        self, tenant_id: str, timeout: float, *, job_id: str = "", batch_id: str = ""
    ) -> AsyncIterator[bytes]:
        """The zip of a succeeded job's outputs or of a batch's succeeded outputs, streamed."""
        if not job_id and not batch_id:
            raise invalid("job_id" if not batch_id else "batch_id", "required")
        req = jb.ListArchiveEntriesRequest(tenant_id=tenant_id, job_id=job_id, batch_id=batch_id)
        with rpc_errors():
            resp: jb.ListArchiveEntriesResponse = await self.jobs.ListArchiveEntries(
                req, timeout=timeout
            )
        async for chunk in stream_archive(resp.entries, self.storage.chunks):
            yield chunk

    async def create_connection(
        self, tenant_id: str, req: gw.CreateStorageConnectionRequest, timeout: float
    ) -> batch_pb2.StorageConnection:
        out = jb.CreateStorageConnectionRequest(
            tenant_id=tenant_id,
            name=req.name,
            endpoint=req.endpoint,
            bucket=req.bucket,
            region=req.region,
            credentials=req.credentials,
        )
        with rpc_errors():
            resp: jb.CreateStorageConnectionResponse = await self.jobs.CreateStorageConnection(
                out, timeout=timeout
            )
        return resp.connection

    async def list_connections(
        self, tenant_id: str, timeout: float
    ) -> list[batch_pb2.StorageConnection]:
        req = jb.ListStorageConnectionsRequest(tenant_id=tenant_id)
        with rpc_errors():
            resp: jb.ListStorageConnectionsResponse = await self.jobs.ListStorageConnections(
                req, timeout=timeout
            )
        return list(resp.connections)

    async def delete_connection(self, tenant_id: str, connection_id: str, timeout: float) -> None:
        req = jb.DeleteStorageConnectionRequest(tenant_id=tenant_id, connection_id=connection_id)
        with rpc_errors():
            await self.jobs.DeleteStorageConnection(req, timeout=timeout)
