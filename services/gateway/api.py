"""Thin gRPC adapter for the public API: authenticate, convert, await one service call."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from pixmesh.gateway.v1 import gateway_pb2 as pb
from pixmesh.gateway.v1 import gateway_pb2_grpc
from services.gateway.auth import ADMIN, READ, WRITE, Principal, require_scope
from services.gateway.metadata import MetadataQueries
from services.gateway.service import GatewayService, Upload
from services.gateway.settings import GatewaySettings
from services.runtime.errors import invalid
from services.runtime.server import Ctx, time_left


def _header(context: Ctx, name: str) -> str | None:
    """A request header: gRPC metadata, which is where Envoy puts the HTTP headers."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


class GatewayApi(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self, service: GatewayService, settings: GatewaySettings, metadata: MetadataQueries
    ) -> None:
        self.service = service
        self.metadata = metadata
        self.timeout = settings.call_timeout_s

    async def _principal(self, context: Ctx, scope: str) -> Principal:
        """The authenticated caller, if its key holds `scope` (auth.READ / WRITE / ADMIN)."""
        principal = await self.service.authenticate(_header(context, "authorization"))
        return require_scope(principal, scope)

    async def _tenant(self, context: Ctx, scope: str = READ) -> str:
        return (await self._principal(context, scope)).tenant_id

    async def UploadImage(
        self, request_iterator: AsyncIterator[pb.UploadImageRequest], context: Ctx
    ) -> pb.UploadImageResponse:
        tenant = await self._tenant(context, WRITE)
        info = pb.UploadInfo()

        async def chunks() -> AsyncIterator[bytes]:
            async for msg in request_iterator:
                if msg.HasField("info"):
                    info.CopyFrom(msg.info)
                elif msg.chunk:
                    yield msg.chunk

        data = await self.service.collect(chunks())
        upload = Upload(data=data, content_type=info.content_type, filename=info.filename)
        return pb.UploadImageResponse(image=await self.service.upload(tenant, upload))

    async def UploadImageRaw(
        self, request: pb.UploadImageRawRequest, context: Ctx
    ) -> pb.UploadImageRawResponse:
        tenant = await self._tenant(context, WRITE)
        upload = Upload(
            data=request.body.data,
            content_type=request.body.content_type,
            filename=request.filename,
        )
        return pb.UploadImageRawResponse(image=await self.service.upload(tenant, upload))

    async def CreateUploadUrl(
        self, request: pb.CreateUploadUrlRequest, context: Ctx
    ) -> pb.CreateUploadUrlResponse:
        tenant = await self._tenant(context, WRITE)
        return await self.service.create_upload_url(tenant, request.filename, request.size_bytes)

    async def RegisterUpload(
        self, request: pb.RegisterUploadRequest, context: Ctx
    ) -> pb.RegisterUploadResponse:
        tenant = await self._tenant(context, WRITE)
        image = await self.service.register_upload(tenant, request.upload_id)
        return pb.RegisterUploadResponse(image=image)

    async def CreateJob(self, request: pb.CreateJobRequest, context: Ctx) -> pb.CreateJobResponse:
        tenant = await self._tenant(context, WRITE)
        job = await self.service.create_job(
            tenant,
            request.image_id,
            request.operations,
            request.idempotency_key,
            time_left(context, self.timeout),
            preset=request.preset,
            renditions=request.renditions,
            accept=_header(context, "accept"),
            webhook=request.webhook if request.HasField("webhook") else None,
            reuse=request.reuse if request.HasField("reuse") else True,
        )
        return pb.CreateJobResponse(job=job)

    async def PlanJob(self, request: pb.PlanJobRequest, context: Ctx) -> pb.PlanJobResponse:
        tenant = await self._tenant(context)
        return await self.service.plan_job(
            tenant,
            request.image_id,
            request.preset,
            request.operations,
            _header(context, "accept"),
            time_left(context, self.timeout),
            request.renditions,
        )

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        tenant = await self._tenant(context)
        job = await self.service.get_job(tenant, request.job_id, time_left(context, self.timeout))
        return pb.GetJobResponse(job=job)

    async def ListJobs(self, request: pb.ListJobsRequest, context: Ctx) -> pb.ListJobsResponse:
        tenant = await self._tenant(context)
        jobs, token = await self.service.list_jobs(
            tenant,
            request.page_size,
            request.page_token,
            request.state,
            time_left(context, self.timeout),
        )
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchJobResponse]:
        tenant = await self._tenant(context)
        async for job in self.service.watch_job(tenant, request.job_id):
            yield pb.WatchJobResponse(job=job)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.CancelJobResponse:
        tenant = await self._tenant(context, WRITE)
        job = await self.service.cancel_job(
            tenant, request.job_id, time_left(context, self.timeout)
        )
        return pb.CancelJobResponse(job=job)

    async def DownloadOutput(
        self, request: pb.DownloadOutputRequest, context: Ctx
    ) -> pb.DownloadOutputResponse:
        tenant = await self._tenant(context)
        if not request.job_id:
            raise invalid("job_id", "required")
        content_type, data = await self.service.download(
            tenant, request.job_id, request.index, time_left(context, self.timeout)
        )
        return pb.DownloadOutputResponse(
            body=httpbody_pb2.HttpBody(content_type=content_type, data=data)
        )

    async def GetOutputUrl(
        self, request: pb.GetOutputUrlRequest, context: Ctx
    ) -> pb.GetOutputUrlResponse:
        tenant = await self._tenant(context)
        if not request.job_id:
            raise invalid("job_id", "required")
        return await self.service.output_url(
            tenant, request.job_id, request.index, time_left(context, self.timeout)
        )

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        await self._tenant(context)
        return await self.service.list_operations()

    async def GetImageMetadata(
        self, request: pb.GetImageMetadataRequest, context: Ctx
    ) -> pb.GetImageMetadataResponse:
        tenant = await self._tenant(context)
        md = await self.metadata.get(tenant, request.image_id, time_left(context, self.timeout))
        return pb.GetImageMetadataResponse(metadata=md)

    async def SearchImages(
        self, request: pb.SearchImagesRequest, context: Ctx
    ) -> pb.SearchImagesResponse:
        tenant = await self._tenant(context)
        return await self.metadata.search(tenant, request, time_left(context, self.timeout))

    async def FindSimilar(
        self, request: pb.FindSimilarRequest, context: Ctx
    ) -> pb.FindSimilarResponse:
        tenant = await self._tenant(context)
        return await self.metadata.similar(tenant, request, time_left(context, self.timeout))

    async def GetFleetStatus(
        self, request: pb.GetFleetStatusRequest, context: Ctx
    ) -> pb.GetFleetStatusResponse:
        # Deployment-wide: admin keys only.
        await self._principal(context, ADMIN)
        status = await self.service.fleet_status(time_left(context, self.timeout))
        return pb.GetFleetStatusResponse(status=status)
