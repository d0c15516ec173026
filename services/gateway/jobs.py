"""Jobs through the gateway: resolve and check a pipeline (presets, `convert.auto`, imaging's
plan), honour idempotency keys and backpressure, forward to the jobs service, and give every job
that goes back out the public REST route of its outputs (the jobs service knows no routes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from cachetools import LRUCache
from google.protobuf.message import Message
from opentelemetry import trace

from pixmesh.common.v1 import fleet_pb2, image_pb2, job_pb2, operations_pb2
from pixmesh.gateway.v1 import gateway_pb2
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.gateway import errors
from services.gateway.backpressure import Backpressure
from services.gateway.capabilities import CapabilityCache
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
from services.gateway.uploads import find_image
from services.gateway.validation import check_available, check_params, check_shape
from services.gateway.webhooks import check_webhook
from services.runtime import metrics
from services.runtime.errors import from_rpc_error, invalid, rpc_errors
from services.runtime.pipeline import check_renditions, plan_stages, request_hash

# The REST route of an output (read from the proto's http rule) and a job with each output's
# `download_path` set: the jobs service knows no routes.
from services.runtime.routes import link_outputs as linked
from services.runtime.routes import output_download_path as download_path
from services.runtime.storage import Storage
from services.runtime.video import check_video_job, job_renditions

log = logging.getLogger(__name__)

# Pipelines whose parameters passed the checks without the image, remembered (serialised) so
# that a pipeline asked again is not checked again: those checks are a pure function of the
# operations and the deployment's max_output_dimension (fixed per process), and protovalidate's
# CEL evaluation of a denoise or metadata operation was ~7% of the gateway's busy samples under
# CreateJob load. Refusals are not kept (checked every time, as before).
CHECKED_PIPELINES = 4096

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


@dataclass(frozen=True)
class Resolved:
    """What a CreateJob or PlanJob turns into: the image, the pipeline that will run (presets
    expanded, `convert.auto` resolved), the renditions likewise, and imaging's plan (None when
    imaging could not plan and only the coarse checks ran)."""

    image: image_pb2.Image
    operations: list[operations_pb2.Operation]
    renditions: list[operations_pb2.Rendition]
    plan: operations_pb2.PipelinePlan | None


async def check_pipeline(
    settings: GatewaySettings,
    capabilities: CapabilityCache,
    pipeline: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
) -> None:
    """The checks that need neither the image nor the parameters: how many renditions and
    operations, and whether this deployment runs each operation now."""
    check_renditions(renditions, settings.max_renditions)
    check_shape(pipeline, settings.max_operations, renditions)
    unavailable = await capabilities.unavailable()
    check_available(pipeline, unavailable)
    for i, rendition in enumerate(renditions):
        check_available(rendition.operations, unavailable, f"renditions[{i}].")


def check_all_params(
    settings: GatewaySettings,
    pipeline: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
) -> None:
    """Every operation's parameters, the pipeline's and each rendition's (without imaging's plan:
    the coarse path)."""
    check_params(pipeline, settings.max_output_dimension)
    for i, rendition in enumerate(renditions):
        check_params(
            rendition.operations, settings.max_output_dimension, prefix=f"renditions[{i}]."
        )


class JobRequests:
    def __init__(
        self,
        settings: GatewaySettings,
        repo: GatewayRepository,
        jobs: jobs_pb2_grpc.JobsServiceStub,
        planner: Planner,
        capabilities: CapabilityCache,
        idempotency: IdempotencyCache,
        storage: Storage,
        backpressure: Backpressure | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.idempotency = idempotency
        self.storage = storage
        self.jobs = jobs
        self.capabilities = capabilities
        self.planner = planner
        self.backpressure = backpressure
        self.presets = parse_presets(settings.presets)
        self._checked: LRUCache[tuple[bytes, ...], bool] = LRUCache(maxsize=CHECKED_PIPELINES)

    def _check_params(self, pipeline: Sequence[operations_pb2.Operation]) -> None:
        """`check_params` of the pipeline but imaging's operations, once per pipeline."""
        key = tuple(op.SerializeToString(deterministic=True) for op in pipeline)
        if key in self._checked:
            return
        check_params(pipeline, self.settings.max_output_dimension, skip_imaging=True)
        self._checked[key] = True

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
        image = await find_image(self.repo, tenant_id, image_id)
        s = self.settings
        pipeline = resolve_auto(expand(self.presets, preset, ops), accept, image.format)
        branches = resolve_auto_renditions(
            expand_renditions(self.presets, renditions), accept, image.format
        )
        check_video_job(pipeline, branches, image.kind)
        # Each frame of a video_frames job is an output: the job becomes one with a rendition
        # per frame (times each rendition asked for), which jobs and workers handle as any other.
        branches = job_renditions(pipeline, branches)
        await check_pipeline(s, self.capabilities, pipeline, branches)
        self._check_params(pipeline)
        try:
            plan = await self.planner(image, pipeline, branches, min(timeout, s.plan_timeout_s))
        except grpc.aio.AioRpcError as exc:
            if not degrade or exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise from_rpc_error(exc) from exc
            # Availability over precision: the worker runs the exact checks again and fails
            # the job with the same reason, so a job is not refused because imaging restarts.
            log.warning("imaging cannot plan; coarse checks only", extra={"image_id": image_id})
            check_all_params(s, pipeline, branches)
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
        return linked(resp.job)

    async def _job(self, rpc: Callable[..., Any], request: Message, timeout: float) -> job_pb2.Job:
        """The one job a jobs-service RPC answers (GetJob, CancelJob, ReplayJob), linked."""
        with rpc_errors():
            resp = await rpc(request, timeout=timeout)
        return linked(resp.job)

    async def get_job(self, tenant_id: str, job_id: str, timeout: float) -> job_pb2.Job:
        req = jobs_pb2.GetJobRequest(tenant_id=tenant_id, job_id=job_id)
        return await self._job(self.jobs.GetJob, req, timeout)

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
        return [linked(job) for job in resp.jobs], resp.next_page_token

    async def watch_job(self, tenant_id: str, job_id: str) -> AsyncIterator[job_pb2.Job]:
        call = self.jobs.WatchJob(jobs_pb2.WatchJobRequest(tenant_id=tenant_id, job_id=job_id))
        try:
            with rpc_errors():
                async for resp in call:
                    yield linked(resp.job)
        finally:
            call.cancel()

    async def cancel_job(self, tenant_id: str, job_id: str, timeout: float) -> job_pb2.Job:
        req = jobs_pb2.CancelJobRequest(tenant_id=tenant_id, job_id=job_id)
        return await self._job(self.jobs.CancelJob, req, timeout)

    # ---- outputs -----------------------------------------------------------------------------

    async def _output(
        self, tenant_id: str, job_id: str, index: int, timeout: float
    ) -> jobs_pb2.GetOutputResponse:
        """One output of a succeeded job and its object key (errors: the jobs service's)."""
        if not job_id:
            raise invalid("job_id", "required")
        req = jobs_pb2.GetOutputRequest(tenant_id=tenant_id, job_id=job_id, index=index)
        with rpc_errors():
            resp: jobs_pb2.GetOutputResponse = await self.jobs.GetOutput(req, timeout=timeout)
        resp.output.download_path = download_path(job_id, resp.output.index)
        return resp

    async def download(
        self, tenant_id: str, job_id: str, index: int, timeout: float
    ) -> tuple[str, bytes]:
        resp = await self._output(tenant_id, job_id, index, timeout)
        return resp.output.content_type, await self.storage.get(resp.key)

    async def output_url(
        self, tenant_id: str, job_id: str, index: int, timeout: float
    ) -> gateway_pb2.GetOutputUrlResponse:
        """A presigned GET URL of one output: the lookup (and its errors) of `download`."""
        resp = await self._output(tenant_id, job_id, index, timeout)
        ttl = self.settings.download_url_ttl_s
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
        out = gateway_pb2.GetOutputUrlResponse(
            url=self.storage.presign_get(resp.key, resp.output.content_type, ttl),
            output=resp.output,
        )
        out.expires_at.FromDatetime(expires_at)
        return out

    # ---- the deployment (the caller checked the admin scope) ---------------------------------

    async def fleet_status(self, timeout: float) -> fleet_pb2.FleetStatus:
        """The deployment's status, as the job registry reads it (not scoped to the tenant)."""
        with rpc_errors():
            resp: jobs_pb2.GetFleetStatusResponse = await self.jobs.GetFleetStatus(
                jobs_pb2.GetFleetStatusRequest(), timeout=timeout
            )
        return resp.status

    async def dead_letters(self, page_size: int, timeout: float) -> list[fleet_pb2.DeadLetter]:
        """The newest dead letters of the deployment (not scoped to the tenant)."""
        req = jobs_pb2.ListDeadLettersRequest(page_size=page_size)
        with rpc_errors():
            resp: jobs_pb2.ListDeadLettersResponse = await self.jobs.ListDeadLetters(
                req, timeout=timeout
            )
        return list(resp.dead_letters)

    async def replay_job(self, job_id: str, timeout: float) -> job_pb2.Job:
        """Run any tenant's FAILED job again from its failed stage."""
        if not job_id:
            raise invalid("job_id", "required")
        return await self._job(
            self.jobs.ReplayJob, jobs_pb2.ReplayJobRequest(job_id=job_id), timeout
        )
