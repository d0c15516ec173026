"""The public API's logic: authenticate, take uploads, validate pipelines, forward to jobs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from opentelemetry import trace

from pixmesh.common.v1 import fleet_pb2, image_pb2, job_pb2, operations_pb2
from pixmesh.gateway.v1 import gateway_pb2
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.gateway import errors
from services.gateway.auth import Authenticator, Principal
from services.gateway.backpressure import Backpressure
from services.gateway.capabilities import CapabilityCache
from services.gateway.events import UploadEvents
from services.gateway.idempotency import IdempotencyCache
from services.gateway.pipelines import (
    expand,
    expand_renditions,
    parse_presets,
    resolve_auto,
    resolve_auto_renditions,
)
from services.gateway.repository import GatewayRepository
from services.gateway.settings import GatewaySettings
from services.gateway.validation import (
    OUTPUT_FORMATS,
    check_available,
    check_params,
    check_shape,
)
from services.gateway.webhooks import check_webhook
from services.runtime import metrics
from services.runtime.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    from_rpc_error,
    invalid,
    rpc_errors,
)
from services.runtime.imageprobe import ProbeLimits, probe
from services.runtime.pipeline import check_renditions, plan_stages, request_hash
from services.runtime.storage import Storage, input_key

log = logging.getLogger(__name__)

# The imaging service's PlanPipeline (image, operations, renditions, timeout): the exact checks
# and the predicted output. Raises grpc.aio.AioRpcError like the stub it wraps.
Planner = Callable[
    [
        image_pb2.Image,
        Sequence[operations_pb2.Operation],
        Sequence[operations_pb2.Rendition],
        float,
    ],
    Awaitable[operations_pb2.PipelinePlan],
]

# Expired presigned uploads cleaned up per pass (one pass at a time, started by CreateUploadUrl).
CLEANUP_BATCH = 20

INPUT_FORMATS = [
    f for f in image_pb2.ImageFormat.values() if f != image_pb2.IMAGE_FORMAT_UNSPECIFIED
]


@dataclass(frozen=True)
class Resolved:
    """What a CreateJob or PlanJob turns into: the image, the pipeline that will run (presets
    expanded, `convert.auto` resolved), the renditions likewise, and imaging's plan (None when
    imaging could not plan and only the coarse checks ran)."""

    image: image_pb2.Image
    operations: list[operations_pb2.Operation]
    renditions: list[operations_pb2.Rendition]
    plan: operations_pb2.PipelinePlan | None


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str = ""
    filename: str = ""


def staging_key(tenant_id: str, upload_id: str) -> str:
    """Where a presigned upload's bytes wait for RegisterUpload."""
    return f"uploads/{tenant_id}/{upload_id}"


class GatewayService:
    def __init__(
        self,
        settings: GatewaySettings,
        repo: GatewayRepository,
        idempotency: IdempotencyCache,
        storage: Storage,
        jobs: jobs_pb2_grpc.JobsServiceStub,
        capabilities: CapabilityCache,
        events: UploadEvents,
        planner: Planner,
        backpressure: Backpressure | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.idempotency = idempotency
        self.storage = storage
        self.jobs = jobs
        self.capabilities = capabilities
        self.events = events
        self.planner = planner
        self.backpressure = backpressure
        self.presets = parse_presets(settings.presets)
        self.limits = ProbeLimits(
            max_bytes=settings.max_input_bytes,
            max_pixels=settings.max_pixels,
            max_frames=settings.max_frames,
        )
        self.auth = Authenticator(lambda digest: self.repo.principal(digest), settings.cache_ttl_s)
        self._cleanup: asyncio.Task[int] | None = None

    # ---- auth -----------------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller for an `authorization: Bearer <key>` header value (cached, see auth)."""
        return await self.auth.authenticate(authorization)

    # ---- uploads --------------------------------------------------------------------------

    async def collect(self, chunks: AsyncIterator[bytes]) -> bytes:
        """Join streamed chunks, failing as soon as the size limit is crossed."""
        buf = bytearray()
        async for chunk in chunks:
            buf += chunk
            if len(buf) > self.settings.max_input_bytes:
                raise InvalidArgument(
                    message=f"image is larger than {self.settings.max_input_bytes} bytes",
                    reason="IMAGE_TOO_LARGE",
                )
        return bytes(buf)

    async def upload(self, tenant_id: str, upload: Upload) -> image_pb2.Image:
        header = probe(upload.data, self.limits)
        sha = hashlib.sha256(upload.data).hexdigest()
        key = input_key(sha)

        async def store() -> None:
            if not await self.storage.exists(key):
                await self.storage.put(key, upload.data, header.mime_type)

        image = image_pb2.Image(
            format=header.format,
            width=header.width,
            height=header.height,
            frame_count=header.frame_count,
            size_bytes=len(upload.data),
            orientation=header.orientation,
            sha256=sha,
            content_type=header.mime_type,
            filename=upload.filename[:255],
        )
        saved = await self.repo.save_image(tenant_id, image, store)
        # Announced on every upload, repeats included: the event is what gets the image indexed
        # (metadata, search), and the upload is only answered once the event is in JetStream,
        # so a failed publish fails the upload and the client's retry announces it again.
        await self.events.image_uploaded(tenant_id, saved)
        return saved

    # ---- presigned uploads ----------------------------------------------------------------
    #
    # The client PUTs to a staging key of its tenant, `uploads/<tenant>/<upload_id>`; registering
    # reads it back and runs it through `upload`, exactly as an UploadImage would, then deletes
    # it. Staging objects never registered are deleted by `clean_expired_uploads`, run in the
    # background by CreateUploadUrl, a bounded batch at a time: SeaweedFS's S3 lifecycle rules
    # only expire whole days (through its filer TTL), far coarser than a URL's minutes, so the
    # gateway does it itself. An S3 bucket lifecycle rule on `uploads/` (1 day) is a good extra
    # net in production, where nothing may create uploads for a while.

    async def create_upload_url(
        self, tenant_id: str, filename: str, size_bytes: int
    ) -> gateway_pb2.CreateUploadUrlResponse:
        limit = self.settings.max_input_bytes
        if size_bytes == 0:
            raise invalid("size_bytes", "required: the size of the file to upload, in bytes")
        if size_bytes > limit:
            description = f"the image is {size_bytes} bytes; the limit is {limit}"
            raise InvalidArgument(
                message=f"size_bytes: {description}",
                reason="IMAGE_TOO_LARGE",
                violations=(FieldViolation("size_bytes", description),),
            )
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
        limit = self.settings.max_input_bytes
        if size > limit:
            raise InvalidArgument(
                message=f"the image is {size} bytes; the limit is {limit}",
                reason="IMAGE_TOO_LARGE",
            )
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
        image = await self.repo.get_image(tenant_id, image_id)
        if image is None:  # images are never deleted; this would be a bug
            raise errors.image_not_found(image_id)
        return image

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

    # ---- jobs -----------------------------------------------------------------------------

    async def _resolve(
        self,
        tenant_id: str,
        image_id: str,
        preset: str,
        ops: Sequence[operations_pb2.Operation],
        renditions: Sequence[operations_pb2.Rendition],
        accept: str | None,
        timeout: float,
        *,
        degrade: bool,
    ) -> Resolved:
        """The image, the pipeline and renditions that will run (presets expanded, auto format
        chosen) and their plan. With `degrade`, an unavailable imaging service falls back to the
        coarse checks and the plan is None; otherwise its UNAVAILABLE is passed on."""
        if not image_id:
            raise invalid("image_id", "required")
        image = await self.repo.get_image(tenant_id, image_id)
        if image is None:
            raise errors.image_not_found(image_id)
        s = self.settings
        pipeline = resolve_auto(expand(self.presets, preset, ops), accept, image.format)
        branches = resolve_auto_renditions(
            expand_renditions(self.presets, renditions), accept, image.format
        )
        check_renditions(branches, s.max_renditions)
        check_shape(pipeline, s.max_operations, branches)
        unavailable = await self.capabilities.unavailable()
        check_available(pipeline, unavailable)
        for i, rendition in enumerate(branches):
            check_available(rendition.operations, unavailable, f"renditions[{i}].")
        check_params(pipeline, s.max_output_dimension, skip_imaging=True)
        try:
            plan = await self.planner(image, pipeline, branches, min(timeout, s.plan_timeout_s))
        except grpc.aio.AioRpcError as exc:
            if not degrade or exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise from_rpc_error(exc) from exc
            # Availability over precision: the worker runs the exact checks again and fails
            # the job with the same reason, so a job is not refused because imaging restarts.
            log.warning("imaging cannot plan; coarse checks only", extra={"image_id": image_id})
            check_params(pipeline, s.max_output_dimension)
            for i, rendition in enumerate(branches):
                check_params(
                    rendition.operations, s.max_output_dimension, prefix=f"renditions[{i}]."
                )
            return Resolved(image, pipeline, branches, None)
        return Resolved(image, pipeline, branches, plan)

    async def plan_job(
        self,
        tenant_id: str,
        image_id: str,
        preset: str,
        ops: Sequence[operations_pb2.Operation],
        accept: str | None,
        timeout: float,
        renditions: Sequence[operations_pb2.Rendition] = (),
    ) -> gateway_pb2.PlanJobResponse:
        resolved = await self._resolve(
            tenant_id, image_id, preset, ops, renditions, accept, timeout, degrade=False
        )
        return gateway_pb2.PlanJobResponse(image=resolved.image, plan=resolved.plan)

    async def create_job(
        self,
        tenant_id: str,
        image_id: str,
        ops: Sequence[operations_pb2.Operation],
        idempotency_key: str,
        timeout: float,
        *,
        preset: str = "",
        renditions: Sequence[operations_pb2.Rendition] = (),
        accept: str | None = None,
        webhook: job_pb2.Webhook | None = None,
        reuse: bool = True,
    ) -> job_pb2.Job:
        """`reuse` False recomputes outputs that identical work already stored."""
        if len(idempotency_key) > 255:
            raise invalid("idempotency_key", "at most 255 characters")
        if webhook is not None:
            await check_webhook(webhook, self.settings.webhook_allow_private, timeout)
        resolved = await self._resolve(
            tenant_id, image_id, preset, ops, renditions, accept, timeout, degrade=True
        )
        image = resolved.image
        req_hash = request_hash(
            image,
            resolved.operations,
            resolved.renditions,
            webhook_url=webhook.url if webhook is not None else "",
        )
        if idempotency_key:
            seen = await self.idempotency.get(tenant_id, idempotency_key)
            if seen is not None:
                job_id, seen_hash = seen
                if seen_hash != req_hash:
                    raise errors.idempotency_mismatch()
                metrics.GATEWAY_IDEMPOTENCY_HITS().inc()
                return await self.get_job(tenant_id, job_id, timeout)
        if self.backpressure is not None:
            # After the idempotency replay: a job that exists is answered even when queues are full.
            stages = plan_stages(resolved.operations, resolved.renditions)
            await self.backpressure.check(stage.service for stage in stages)
        req = jobs_pb2.CreateJobRequest(
            tenant_id=tenant_id,
            image=image,
            operations=resolved.operations,
            renditions=resolved.renditions,
            idempotency_key=idempotency_key,
            request_hash=req_hash,
            webhook=webhook,
            reuse=None if reuse else False,
        )
        with rpc_errors():
            resp: jobs_pb2.CreateJobResponse = await self.jobs.CreateJob(req, timeout=timeout)
        trace.get_current_span().set_attribute("pixmesh.job_id", resp.job.job_id)
        if idempotency_key:
            if not resp.created:  # not in Redis, found by the jobs service's unique key
                metrics.GATEWAY_IDEMPOTENCY_HITS().inc()
            await self.idempotency.remember(tenant_id, idempotency_key, resp.job.job_id, req_hash)
        return resp.job

    async def get_job(self, tenant_id: str, job_id: str, timeout: float) -> job_pb2.Job:
        req = jobs_pb2.GetJobRequest(tenant_id=tenant_id, job_id=job_id)
        with rpc_errors():
            resp: jobs_pb2.GetJobResponse = await self.jobs.GetJob(req, timeout=timeout)
        return resp.job

    async def list_jobs(
        self, tenant_id: str, page_size: int, page_token: str, state: int, timeout: float
    ) -> tuple[Iterable[job_pb2.Job], str]:
        req = jobs_pb2.ListJobsRequest(
            tenant_id=tenant_id,
            page_size=page_size,
            page_token=page_token,
            state=state,  # type: ignore[arg-type]
        )
        with rpc_errors():
            resp: jobs_pb2.ListJobsResponse = await self.jobs.ListJobs(req, timeout=timeout)
        return resp.jobs, resp.next_page_token

    async def watch_job(self, tenant_id: str, job_id: str) -> AsyncIterator[job_pb2.Job]:
        call = self.jobs.WatchJob(jobs_pb2.WatchJobRequest(tenant_id=tenant_id, job_id=job_id))
        try:
            with rpc_errors():
                async for resp in call:
                    yield resp.job
        finally:
            call.cancel()

    async def fleet_status(self, timeout: float) -> fleet_pb2.FleetStatus:
        """The deployment's status, as the job registry reads it (not scoped to the tenant)."""
        with rpc_errors():
            resp: jobs_pb2.GetFleetStatusResponse = await self.jobs.GetFleetStatus(
                jobs_pb2.GetFleetStatusRequest(), timeout=timeout
            )
        return resp.status

    async def dead_letters(self, page_size: int, timeout: float) -> list[fleet_pb2.DeadLetter]:
        """The newest dead letters of the deployment (not scoped: the caller checked admin)."""
        req = jobs_pb2.ListDeadLettersRequest(page_size=page_size)
        with rpc_errors():
            resp: jobs_pb2.ListDeadLettersResponse = await self.jobs.ListDeadLetters(
                req, timeout=timeout
            )
        return list(resp.dead_letters)

    async def replay_job(self, job_id: str, timeout: float) -> job_pb2.Job:
        """Run any tenant's FAILED job again from its failed stage (the caller checked admin)."""
        if not job_id:
            raise invalid("job_id", "required")
        with rpc_errors():
            resp: jobs_pb2.ReplayJobResponse = await self.jobs.ReplayJob(
                jobs_pb2.ReplayJobRequest(job_id=job_id), timeout=timeout
            )
        return resp.job

    async def source(self, tenant_id: str, image_id: str) -> tuple[str, bytes]:
        """An uploaded image's bytes and content type (the tenant's images only)."""
        if not image_id:
            raise invalid("image_id", "required")
        image = await self.repo.get_image(tenant_id, image_id)
        if image is None:
            raise errors.image_not_found(image_id)
        return image.content_type, await self.storage.get(input_key(image.sha256))

    async def cancel_job(self, tenant_id: str, job_id: str, timeout: float) -> job_pb2.Job:
        req = jobs_pb2.CancelJobRequest(tenant_id=tenant_id, job_id=job_id)
        with rpc_errors():
            resp: jobs_pb2.CancelJobResponse = await self.jobs.CancelJob(req, timeout=timeout)
        return resp.job

    async def download(
        self, tenant_id: str, job_id: str, index: int, timeout: float
    ) -> tuple[str, bytes]:
        req = jobs_pb2.GetOutputRequest(tenant_id=tenant_id, job_id=job_id, index=index)
        with rpc_errors():
            resp: jobs_pb2.GetOutputResponse = await self.jobs.GetOutput(req, timeout=timeout)
        return resp.output.content_type, await self.storage.get(resp.key)

    async def output_url(
        self, tenant_id: str, job_id: str, index: int, timeout: float
    ) -> gateway_pb2.GetOutputUrlResponse:
        """A presigned GET URL of one output: the lookup (and its errors) of `download`."""
        req = jobs_pb2.GetOutputRequest(tenant_id=tenant_id, job_id=job_id, index=index)
        with rpc_errors():
            resp: jobs_pb2.GetOutputResponse = await self.jobs.GetOutput(req, timeout=timeout)
        ttl = self.settings.download_url_ttl_s
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
        out = gateway_pb2.GetOutputUrlResponse(
            url=self.storage.presign_get(resp.key, resp.output.content_type, ttl),
            output=resp.output,
        )
        out.expires_at.FromDatetime(expires_at)
        return out

    async def list_operations(self) -> gateway_pb2.ListOperationsResponse:
        s = self.settings
        return gateway_pb2.ListOperationsResponse(
            operations=await self.capabilities.operations(),
            limits=image_pb2.Limits(
                max_input_bytes=s.max_input_bytes,
                max_pixels=s.max_pixels,
                max_frames=s.max_frames,
                max_output_dimension=s.max_output_dimension,
                max_operations=s.max_operations,
                max_renditions=s.max_renditions,
            ),
            input_formats=INPUT_FORMATS,
            output_formats=sorted(OUTPUT_FORMATS),
            presets=[
                gateway_pb2.Preset(name=name, operations=ops)
                for name, ops in sorted(self.presets.items())
            ],
        )
