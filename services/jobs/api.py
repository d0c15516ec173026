"""Thin gRPC adapter: convert, await one service call, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

from pixmesh.jobs.v1 import jobs_pb2 as pb
from pixmesh.jobs.v1 import jobs_pb2_grpc
from services.jobs.batch_api import BatchApi
from services.jobs.deadletters import DeadLetters
from services.jobs.deletion import delete_jobs
from services.jobs.fleet import Fleet
from services.jobs.service import JobsService
from services.runtime.server import Ctx


class JobsApi(BatchApi, jobs_pb2_grpc.JobsServiceServicer):
    def __init__(
        self, service: JobsService, fleet: Fleet, dead_letters: DeadLetters | None = None
    ) -> None:
        self.service = service
        self.fleet = fleet
        self._dead_letters = dead_letters

    async def CreateJob(self, request: pb.CreateJobRequest, context: Ctx) -> pb.CreateJobResponse:
        job, created = await self.service.create_job(
            request.tenant_id,
            request.image,
            request.operations,
            request.idempotency_key,
            request.request_hash,
            request.renditions,
            request.webhook if request.HasField("webhook") else None,
            reuse=request.reuse if request.HasField("reuse") else True,
        )
        return pb.CreateJobResponse(job=job, created=created)

    async def DeleteJobs(
        self, request: pb.DeleteJobsRequest, context: Ctx
    ) -> pb.DeleteJobsResponse:
        done = await delete_jobs(
            self.service.repo.pool,
            request.tenant_id,
            job_id=request.job_id,
            image_id=request.image_id,
            image_ids=request.image_ids,
            finished_before=request.finished_before.ToDatetime(tzinfo=UTC)
            if request.HasField("finished_before")
            else None,
            fail_if_running=request.fail_if_running,
            limit=request.limit,
        )
        return pb.DeleteJobsResponse(
            jobs_deleted=done.jobs_deleted,
            jobs_running=done.jobs_running,
            unreferenced_keys=done.unreferenced_keys,
            keys_kept=done.keys_kept,
            images_running=done.images_running,
            released_sources=done.released_sources,
        )

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=await self.service.get_job(request.tenant_id, request.job_id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Ctx) -> pb.ListJobsResponse:
        jobs, token = await self.service.list_jobs(
            request.tenant_id, request.page_size, request.page_token, request.state
        )
        return pb.ListJobsResponse(jobs=jobs, next_page_token=token)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchJobResponse]:
        async for job in self.service.watch_job(request.tenant_id, request.job_id):
            yield pb.WatchJobResponse(job=job)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(
            job=await self.service.cancel_job(request.tenant_id, request.job_id)
        )

    async def GetOutput(self, request: pb.GetOutputRequest, context: Ctx) -> pb.GetOutputResponse:
        output, key = await self.service.get_output(
            request.tenant_id, request.job_id, request.index
        )
        return pb.GetOutputResponse(output=output, key=key)

    async def GetFleetStatus(
        self, request: pb.GetFleetStatusRequest, context: Ctx
    ) -> pb.GetFleetStatusResponse:
        return pb.GetFleetStatusResponse(status=await self.fleet.status())

    @property
    def dead_letters(self) -> DeadLetters:
        assert self._dead_letters is not None, "JobsApi built without DeadLetters"
        return self._dead_letters

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Ctx
    ) -> pb.ListDeadLettersResponse:
        letters = await self.dead_letters.list(request.page_size)
        return pb.ListDeadLettersResponse(dead_letters=letters)

    async def ReplayJob(self, request: pb.ReplayJobRequest, context: Ctx) -> pb.ReplayJobResponse:
        return pb.ReplayJobResponse(job=await self.dead_letters.replay(request.job_id))
