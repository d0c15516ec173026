"""Thin gRPC adapter for the public API: authenticate, convert, await one service call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from google.api import httpbody_pb2

from pixmesh.gateway.v1 import gateway_pb2 as pb
from pixmesh.gateway.v1 import gateway_pb2_grpc
from services.gateway.auth import ADMIN, READ, WRITE, Principal, require_scope
from services.gateway.batch_api import BatchApi
from services.gateway.deletion import Deletion
from services.gateway.key_admin import KeyAdmin
from services.gateway.metadata import MetadataQueries
from services.gateway.quotas import Quotas
from services.gateway.service import GatewayService, Upload
from services.gateway.settings import GatewaySettings
from services.runtime.server import Ctx, time_left


def _header(context: Ctx, name: str) -> str | None:
    """A request header: gRPC metadata, which is where Envoy puts the HTTP headers."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode()
    return None


class GatewayApi(BatchApi, gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        service: GatewayService,
        settings: GatewaySettings,
        metadata: MetadataQueries,
        keys: KeyAdmin | None = None,
        quotas: Quotas | None = None,
        deletion: Deletion | None = None,
    ) -> None:
        self.service = service
        self.metadata = metadata
        self._keys = keys
        self.quotas = quotas
        self._deletion = deletion
        self.timeout = settings.call_timeout_s

    async def _principal(self, context: Ctx, scope: str) -> Principal:
        """The authenticated caller, if its key holds `scope` (auth.READ / WRITE / ADMIN)."""
        principal = await self.service.authenticate(_header(context, "authorization"))
        if self.quotas is not None:  # every authenticated request counts against the key's rate
            await self.quotas.check_request(principal)
        return require_scope(principal, scope)

    @asynccontextmanager
    async def _job_quota(self, tenant: str) -> AsyncIterator[None]:
        if self.quotas is None:
            yield
        else:
            async with self.quotas.job(tenant):
                yield

    async def _storage_quota(self, tenant: str, adding: int) -> None:
        if self.quotas is not None:
            await self.quotas.check_storage(tenant, adding)

    async def _tenant(self, context: Ctx, scope: str = READ) -> str:
        return (await self._principal(context, scope)).tenant_id

    async def _call(self, context: Ctx, scope: str = READ) -> tuple[str, float]:
        """The caller's tenant (its key holding `scope`) and the deadline of the outbound call."""
        return await self._tenant(context, scope), time_left(context, self.timeout)

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

        with await self.service.collect(chunks()) as data:
            await self._storage_quota(tenant, data.size)
            upload = Upload(data=data, content_type=info.content_type, filename=info.filename)
            return pb.UploadImageResponse(image=await self.service.upload(tenant, upload))

    async def UploadImageRaw(
        self, request: pb.UploadImageRawRequest, context: Ctx
    ) -> pb.UploadImageRawResponse:
        tenant = await self._tenant(context, WRITE)
        await self._storage_quota(tenant, len(request.body.data))
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
        await self._storage_quota(tenant, request.size_bytes)
        return await self.service.create_upload_url(tenant, request.filename, request.size_bytes)

    async def RegisterUpload(
        self, request: pb.RegisterUploadRequest, context: Ctx
    ) -> pb.RegisterUploadResponse:
        tenant = await self._tenant(context, WRITE)
        image = await self.service.register_upload(tenant, request.upload_id)
        return pb.RegisterUploadResponse(image=image)

    async def CreateJob(self, request: pb.CreateJobRequest, context: Ctx) -> pb.CreateJobResponse:
        tenant = await self._tenant(context, WRITE)
        async with self._job_quota(tenant):
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
        tenant, timeout = await self._call(context)
        return await self.service.plan_job(
            tenant,
            request.image_id,
            request.preset,
            request.operations,
            _header(context, "accept"),
            timeout,
            request.renditions,
        )

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        tenant, timeout = await self._call(context)
        return pb.GetJobResponse(job=await self.service.get_job(tenant, request.job_id, timeout))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Ctx) -> pb.ListJobsResponse:
        tenant, timeout = await self._call(context)
        jobs, token = await self.service.list_jobs(
            tenant, request.page_size, request.page_token, request.state, timeout
        )
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchJobResponse]:
        tenant = await self._tenant(context)
        async for job in self.service.watch_job(tenant, request.job_id):
            yield pb.WatchJobResponse(job=job)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.CancelJobResponse:
        tenant, timeout = await self._call(context, WRITE)
        return pb.CancelJobResponse(
            job=await self.service.cancel_job(tenant, request.job_id, timeout)
        )

    async def DownloadOutput(
        self, request: pb.DownloadOutputRequest, context: Ctx
    ) -> pb.DownloadOutputResponse:
        tenant, timeout = await self._call(context)
        content_type, data = await self.service.download(
            tenant, request.job_id, request.index, timeout
        )
        return pb.DownloadOutputResponse(
            body=httpbody_pb2.HttpBody(content_type=content_type, data=data)
        )

    async def GetOutputUrl(
        self, request: pb.GetOutputUrlRequest, context: Ctx
    ) -> pb.GetOutputUrlResponse:
        tenant, timeout = await self._call(context)
        return await self.service.output_url(tenant, request.job_id, request.index, timeout)

    async def ListOperations(
        self, request: pb.ListOperationsRequest, context: Ctx
    ) -> pb.ListOperationsResponse:
        await self._tenant(context)
        return await self.service.list_operations()

    async def GetImageMetadata(
        self, request: pb.GetImageMetadataRequest, context: Ctx
    ) -> pb.GetImageMetadataResponse:
        tenant, timeout = await self._call(context)
        md = await self.metadata.get(tenant, request.image_id, timeout)
        return pb.GetImageMetadataResponse(metadata=md)

    async def SearchImages(
        self, request: pb.SearchImagesRequest, context: Ctx
    ) -> pb.SearchImagesResponse:
        tenant, timeout = await self._call(context)
        return await self.metadata.search(tenant, request, timeout)

    async def FindSimilar(
        self, request: pb.FindSimilarRequest, context: Ctx
    ) -> pb.FindSimilarResponse:
        tenant, timeout = await self._call(context)
        return await self.metadata.similar(tenant, request, timeout)

    async def GetFleetStatus(
        self, request: pb.GetFleetStatusRequest, context: Ctx
    ) -> pb.GetFleetStatusResponse:
        # Deployment-wide: admin keys only.
        await self._principal(context, ADMIN)
        status = await self.service.fleet_status(time_left(context, self.timeout))
        return pb.GetFleetStatusResponse(status=status)

    # ---- what the web console needs (deploy/console) ------------------------------------------

    async def GetCaller(self, request: pb.GetCallerRequest, context: Ctx) -> pb.GetCallerResponse:
        # Any valid key, whatever its scopes: a sign-in check.
        principal = await self.service.authenticate(_header(context, "authorization"))
        return pb.GetCallerResponse(
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            scopes=sorted(principal.scopes),
        )

    async def DownloadImage(
        self, request: pb.DownloadImageRequest, context: Ctx
    ) -> pb.DownloadImageResponse:
        tenant = await self._tenant(context)
        content_type, data = await self.service.source(tenant, request.image_id)
        return pb.DownloadImageResponse(
            body=httpbody_pb2.HttpBody(content_type=content_type, data=data)
        )

    async def GetImagePreview(
        self, request: pb.GetImagePreviewRequest, context: Ctx
    ) -> pb.GetImagePreviewResponse:
        tenant, timeout = await self._call(context)
        preview = await self.metadata.preview(tenant, request.image_id, request.max_size, timeout)
        return pb.GetImagePreviewResponse(
            body=httpbody_pb2.HttpBody(content_type=preview.content_type, data=preview.data)
        )

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Ctx
    ) -> pb.ListDeadLettersResponse:
        await self._principal(context, ADMIN)
        letters = await self.service.dead_letters(
            request.page_size, time_left(context, self.timeout)
        )
        return pb.ListDeadLettersResponse(dead_letters=letters)

    async def ReplayJob(self, request: pb.ReplayJobRequest, context: Ctx) -> pb.ReplayJobResponse:
        await self._principal(context, ADMIN)
        job = await self.service.replay_job(request.job_id, time_left(context, self.timeout))
        return pb.ReplayJobResponse(job=job)

    # ---- deletion ------------------------------------------------------------------------------

    @property
    def deletion(self) -> Deletion:
        assert self._deletion is not None, "GatewayApi built without Deletion"
        return self._deletion

    async def DeleteImage(
        self, request: pb.DeleteImageRequest, context: Ctx
    ) -> pb.DeleteImageResponse:
        tenant, timeout = await self._call(context, WRITE)
        report = await self.deletion.delete_image(tenant, request.image_id, timeout)
        return pb.DeleteImageResponse(report=report)

    async def SetUploadRule(
        self, request: pb.SetUploadRuleRequest, context: Ctx
    ) -> pb.SetUploadRuleResponse:
        tenant = await self._tenant(context, WRITE)
        rule = await self.service.rules.set(tenant, request.kind, request.preset)
        return pb.SetUploadRuleResponse(rule=rule)

    async def ListUploadRules(
        self, request: pb.ListUploadRulesRequest, context: Ctx
    ) -> pb.ListUploadRulesResponse:
        tenant = await self._tenant(context)
        return pb.ListUploadRulesResponse(rules=await self.service.rules.list(tenant))

    async def DeleteUploadRule(
        self, request: pb.DeleteUploadRuleRequest, context: Ctx
    ) -> pb.DeleteUploadRuleResponse:
        tenant = await self._tenant(context, WRITE)
        deleted = await self.service.rules.delete(tenant, request.kind)
        return pb.DeleteUploadRuleResponse(deleted=deleted)

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Ctx) -> pb.DeleteJobResponse:
        tenant, timeout = await self._call(context, WRITE)
        report = await self.deletion.delete_job(tenant, request.job_id, timeout)
        return pb.DeleteJobResponse(report=report)

    async def DeleteTenantData(
        self, request: pb.DeleteTenantDataRequest, context: Ctx
    ) -> pb.DeleteTenantDataResponse:
        tenant, timeout = await self._call(context, ADMIN)
        report = await self.deletion.delete_tenant_data(
            tenant, request.confirm_tenant_id, request.delete_keys, timeout
        )
        return pb.DeleteTenantDataResponse(report=report)

    async def GetUsage(self, request: pb.GetUsageRequest, context: Ctx) -> pb.GetUsageResponse:
        principal = await self._principal(context, READ)
        if self.quotas is None:
            return pb.GetUsageResponse()
        return await self.quotas.usage(principal)

    # ---- API keys (admin scope, within the caller's tenant) -----------------------------------

    @property
    def keys(self) -> KeyAdmin:
        assert self._keys is not None, "GatewayApi built without KeyAdmin"
        return self._keys

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Ctx
    ) -> pb.CreateApiKeyResponse:
        tenant = await self._tenant(context, ADMIN)
        ttl = request.ttl if request.HasField("ttl") else None
        return await self.keys.create(tenant, request.name, request.scopes, ttl)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Ctx
    ) -> pb.ListApiKeysResponse:
        tenant = await self._tenant(context, ADMIN)
        return await self.keys.list(tenant, request.include_revoked)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Ctx
    ) -> pb.RevokeApiKeyResponse:
        tenant = await self._tenant(context, ADMIN)
        return await self.keys.revoke(tenant, request.key_id)

    async def RotateApiKey(
        self, request: pb.RotateApiKeyRequest, context: Ctx
    ) -> pb.RotateApiKeyResponse:
        tenant = await self._tenant(context, ADMIN)
        grace = request.grace_period if request.HasField("grace_period") else None
        return await self.keys.rotate(tenant, request.key_id, grace)
