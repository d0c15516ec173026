"""An in-memory GatewayService for SDK and CLI tests, served by sync grpc or grpc.aio.

`FakeGateway` holds the state and the behaviour; the two servicers only adapt it. Tests script
failures with `fail_next` (each queued `Abort` fails one call, with a rich google.rpc.Status in
the `grpc-status-details-bin` trailer, as the real gateway sends it).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from pixmesh.common.v1 import fleet_pb2, image_pb2, metadata_pb2, operations_pb2
from pixmesh.common.v1.job_pb2 import Job, JobError, Stage
from pixmesh.gateway.v1 import gateway_pb2 as gw
from pixmesh.gateway.v1 import gateway_pb2_grpc

DOMAIN = "pixmesh.dev"


@dataclass
class Abort(Exception):
    code: grpc.StatusCode
    message: str
    reason: str = ""
    violations: Sequence[tuple[str, str]] = ()
    retry_delay_s: float | None = None

    def trailers(self) -> tuple[tuple[str, bytes], ...]:
        details = []
        if self.reason:
            info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN)
            info.metadata["hint"] = "fake"
            details.append(info)
        if self.violations:
            bad = error_details_pb2.BadRequest()
            for name, text in self.violations:
                bad.field_violations.add(field=name, description=text)
            details.append(bad)
        if self.retry_delay_s is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(self.retry_delay_s * 1000))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        packed = []
        for detail in details:
            any_msg = any_pb2.Any()
            any_msg.Pack(detail)
            packed.append(any_msg)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
        return (("grpc-status-details-bin", status.SerializeToString()),)


@dataclass
class Call:
    method: str
    metadata: dict[str, str]
    time_remaining: float | None


@dataclass
class FakeGateway:
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[Abort]] = field(default_factory=lambda: defaultdict(list))
    # Seconds to stall a method before answering (to trip deadlines).
    delays: dict[str, float] = field(default_factory=dict)
    # WatchJob streams that break with UNAVAILABLE / end cleanly after two messages.
    watch_breaks: int = 0
    watch_truncations: int = 0
    upload_messages: list[list[gw.UploadImageRequest]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)
    create_requests: list[gw.CreateJobRequest] = field(default_factory=list)
    plan_requests: list[gw.PlanJobRequest] = field(default_factory=list)
    # The idempotency key of every CreateJob attempt, failed ones included.
    attempt_keys: list[str] = field(default_factory=list)
    # job id -> the states WatchJob walks through, and the index of the current one.
    timelines: dict[str, list[Job]] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, bytes] = field(default_factory=dict)
    # Metadata queries: GetImageMetadata is METADATA_PENDING this many times per image first.
    metadata_pending: int = 0
    search_requests: list[gw.SearchImagesRequest] = field(default_factory=list)
    similar_requests: list[gw.FindSimilarRequest] = field(default_factory=list)
    # What GetFleetStatus answers.
    fleet: fleet_pb2.FleetStatus = field(default_factory=fleet_pb2.FleetStatus)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, method: str, *aborts: Abort) -> None:
        self.failures[method].extend(aborts)

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c.method == method)

    def enter(self, method: str, context: Any) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        with self._lock:
            self.calls.append(Call(method, metadata, context.time_remaining()))
            pending = self.failures.get(method)
            failure = pending.pop(0) if pending else None
        if failure is not None:
            raise failure
        time.sleep(self.delays.get(method, 0))

    # --- behaviour ---------------------------------------------------------------------------

    def upload(self, requests: list[gw.UploadImageRequest]) -> gw.UploadImageResponse:
        self.upload_messages.append(requests)
        if not requests or requests[0].WhichOneof("payload") != "info":
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "info first", "UPLOAD_INFO_MISSING")
        data = b"".join(r.chunk for r in requests[1:])
        image_id = f"img_{len(self.images):032x}"
        self.images[image_id] = data
        image = image_pb2.Image(
            image_id=image_id,
            format=image_pb2.JPEG,
            width=640,
            height=480,
            size_bytes=len(data),
            filename=requests[0].info.filename,
            content_type=requests[0].info.content_type,
        )
        return gw.UploadImageResponse(image=image)

    def create_job(self, request: gw.CreateJobRequest) -> gw.CreateJobResponse:
        self.create_requests.append(request)
        if request.image_id not in self.images:
            raise Abort(grpc.StatusCode.NOT_FOUND, "no such image", "IMAGE_NOT_FOUND")
        job_id = f"job_{len(self.timelines):032x}"
        self.timelines[job_id] = self._timeline(job_id, request)
        self.position[job_id] = 0
        self.outputs[job_id] = b"out:" + self.images[request.image_id]
        return gw.CreateJobResponse(job=self.timelines[job_id][0])

    def plan_job(self, request: gw.PlanJobRequest) -> gw.PlanJobResponse:
        """A plan of 100x100 per resize width, one per rendition; no job is made."""
        self.plan_requests.append(request)
        if request.image_id not in self.images:
            raise Abort(grpc.StatusCode.NOT_FOUND, "no such image", "IMAGE_NOT_FOUND")
        resp = gw.PlanJobResponse(image=gw.UploadImageResponse().image)
        resp.image.image_id = request.image_id
        resp.plan.operations.extend(
            operations_pb2.PlannedOperation(operation=op) for op in request.operations
        )
        resp.plan.output_format = image_pb2.JPEG
        for r in request.renditions:
            planned = resp.plan.renditions.add(name=r.name)
            planned.plan.output_format = _format(r.operations, image_pb2.JPEG)
        return resp

    def get_job(self, job_id: str) -> Job:
        if job_id not in self.timelines:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"job {job_id} does not exist", "JOB_NOT_FOUND")
        return self.timelines[job_id][self.position[job_id]]

    def list_jobs(self, request: gw.ListJobsRequest) -> gw.ListJobsResponse:
        jobs = [self.get_job(job_id) for job_id in reversed(self.timelines)]
        if request.state:
            jobs = [j for j in jobs if j.state == request.state]
        start = int(request.page_token or 0)
        end = start + (request.page_size or 20)
        token = str(end) if end < len(jobs) else ""
        return gw.ListJobsResponse(jobs=jobs[start:end], next_page_token=token)

    def watch(self, job_id: str) -> Iterator[Job]:
        """Start from the current state (as a resumed stream does), then every later one."""
        timeline = self.timelines[self.get_job(job_id).job_id]
        sent = 0
        while True:
            index = self.position[job_id]
            yield timeline[index]
            sent += 1
            if sent == 2 and self.watch_breaks:
                self.watch_breaks -= 1
                raise Abort(grpc.StatusCode.UNAVAILABLE, "gateway draining")
            if sent == 2 and self.watch_truncations:
                self.watch_truncations -= 1
                return
            if index == len(timeline) - 1:
                return
            self.position[job_id] = index + 1

    def cancel_job(self, job_id: str) -> Job:
        job = self.get_job(job_id)
        if job.state in (Job.SUCCEEDED, Job.FAILED, Job.CANCELLED):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION, "job finished", "JOB_FINISHED")
        cancelled = Job(job_id=job_id, image_id=job.image_id, state=Job.CANCELLED)
        self.timelines[job_id].append(cancelled)
        self.position[job_id] = len(self.timelines[job_id]) - 1
        return cancelled

    def download(self, request: gw.DownloadOutputRequest) -> gw.DownloadOutputResponse:
        job = self.get_job(request.job_id)
        if job.state != Job.SUCCEEDED or request.index >= len(job.outputs):
            raise Abort(grpc.StatusCode.NOT_FOUND, "no such output", "OUTPUT_NOT_FOUND")
        resp = gw.DownloadOutputResponse()
        resp.body.content_type = job.outputs[request.index].content_type
        suffix = f":{job.outputs[request.index].rendition}".encode() if job.renditions else b""
        resp.body.data = self.outputs[request.job_id] + suffix
        return resp

    def list_operations(self) -> gw.ListOperationsResponse:
        resp = gw.ListOperationsResponse(
            input_formats=[image_pb2.JPEG, image_pb2.PNG], output_formats=[image_pb2.WEBP]
        )
        resize = resp.operations.add(name="resize", service="imaging", available=True)
        resize.description = "Scale the image to a box."
        resize.parameters.add(name="width", type="uint32", constraint="0..16384")
        resp.operations.add(
            name="denoise", service="inference", available=False, unavailable_reason="no model"
        )
        resp.limits.max_operations = 16
        resp.limits.max_renditions = 10
        return resp

    def get_image_metadata(self, image_id: str) -> gw.GetImageMetadataResponse:
        if image_id not in self.images:
            raise Abort(grpc.StatusCode.NOT_FOUND, "no such image", "IMAGE_NOT_FOUND")
        if self.metadata_pending:
            self.metadata_pending -= 1
            raise Abort(grpc.StatusCode.UNAVAILABLE, "being extracted", "METADATA_PENDING")
        md = metadata_pb2.ImageMetadata(width=640, height=480, mode="RGB")
        md.size_bytes = len(self.images[image_id])
        return gw.GetImageMetadataResponse(metadata=md)

    def search_images(self, request: gw.SearchImagesRequest) -> gw.SearchImagesResponse:
        """Every uploaded image, newest first, in pages; page tokens are offsets."""
        self.search_requests.append(request)
        ids = list(reversed(self.images))
        start = int(request.page_token or 0)
        end = start + (request.page_size or 20)
        records = [metadata_pb2.ImageRecord(image_id=i) for i in ids[start:end]]
        token = str(end) if end < len(ids) else ""
        return gw.SearchImagesResponse(images=records, next_page_token=token)

    def find_similar(self, request: gw.FindSimilarRequest) -> gw.FindSimilarResponse:
        self.similar_requests.append(request)
        if request.image_id not in self.images:
            raise Abort(grpc.StatusCode.NOT_FOUND, "no such image", "IMAGE_NOT_FOUND")
        others = [i for i in self.images if i != request.image_id][: request.page_size or 20]
        return gw.FindSimilarResponse(
            images=[metadata_pb2.SimilarImage(image_id=i, distance=3) for i in others]
        )

    def _timeline(self, job_id: str, request: gw.CreateJobRequest) -> list[Job]:
        """PENDING, RUNNING per stage, then SUCCEEDED (or FAILED for a "CORRUPT" image)."""
        kinds = [op.WhichOneof("op") for op in request.operations]
        imaging = any(k != "extract_metadata" for k in kinds) or request.renditions
        services = ["imaging"] if imaging else []
        services += ["metadata"] if "extract_metadata" in kinds else []
        base = Job(
            job_id=job_id,
            image_id=request.image_id,
            operations=request.operations,
            renditions=request.renditions,
        )
        base.idempotency_key = request.idempotency_key
        base.created_at.FromSeconds(1_700_000_000)
        states = [_job(base, Job.PENDING, [Stage.PENDING] * len(services), services)]
        for done in range(len(services)):
            stage_states = [Stage.SUCCEEDED] * done + [Stage.RUNNING]
            stage_states += [Stage.PENDING] * (len(services) - done - 1)
            states.append(_job(base, Job.RUNNING, stage_states, services))
        final = _job(base, Job.SUCCEEDED, [Stage.SUCCEEDED] * len(services), services)
        if self.images[request.image_id].startswith(b"CORRUPT"):
            final.state = Job.FAILED
            final.stages[0].state = Stage.FAILED
            final.error.CopyFrom(
                JobError(
                    code="INVALID_ARGUMENT",
                    reason="IMAGE_CORRUPT",
                    message="the image data is truncated",
                )
            )
        else:
            fmt = _format(request.operations, image_pb2.JPEG)
            for index, rendition in enumerate(request.renditions):
                final.outputs.add(
                    index=index,
                    format=_format(rendition.operations, fmt),
                    content_type="image/x-fake",
                    width=100 * (index + 1),
                    height=75 * (index + 1),
                    size_bytes=4,
                    rendition=rendition.name,
                )
            if "imaging" in services and not request.renditions:
                final.outputs.add(
                    index=0,
                    format=fmt,
                    content_type="image/x-fake",
                    width=800,
                    height=600,
                    size_bytes=4,
                )
            if "metadata" in services:
                final.metadata.CopyFrom(
                    metadata_pb2.ImageMetadata(width=640, height=480, mode="RGB")
                )
        return [*states, final]


def _format(
    operations: Sequence[operations_pb2.Operation], default: image_pb2.ImageFormat.ValueType
) -> image_pb2.ImageFormat.ValueType:
    """The format of the last convert, else `default`."""
    formats = [op.convert.format for op in operations if op.HasField("convert")]
    return formats[-1] if formats else default


def _job(base: Job, state: Job.State.ValueType, stages: list[Any], services: list[str]) -> Job:
    job = Job()
    job.CopyFrom(base)
    job.state = state
    for index, (service, stage_state) in enumerate(zip(services, stages, strict=True)):
        job.stages.add(index=index, service=service, state=stage_state, attempts=1)
    finished = sum(1 for s in stages if s == Stage.SUCCEEDED)
    job.progress = finished / len(services) if services else 0.0
    return job


class SyncServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    def _run(self, method: str, context: Any, action: Any) -> Any:
        try:
            self.fake.enter(method, context)
            return action()
        except Abort as abort:
            context.set_trailing_metadata(abort.trailers())
            context.abort(abort.code, abort.message)

    def UploadImage(self, request_iterator: Any, context: Any) -> Any:
        return self._run("UploadImage", context, lambda: self.fake.upload(list(request_iterator)))

    def CreateJob(self, request: Any, context: Any) -> Any:
        self.fake.attempt_keys.append(request.idempotency_key)
        return self._run("CreateJob", context, lambda: self.fake.create_job(request))

    def PlanJob(self, request: Any, context: Any) -> Any:
        return self._run("PlanJob", context, lambda: self.fake.plan_job(request))

    def GetJob(self, request: Any, context: Any) -> Any:
        return self._run(
            "GetJob", context, lambda: gw.GetJobResponse(job=self.fake.get_job(request.job_id))
        )

    def ListJobs(self, request: Any, context: Any) -> Any:
        return self._run("ListJobs", context, lambda: self.fake.list_jobs(request))

    def WatchJob(self, request: Any, context: Any) -> Iterator[gw.WatchJobResponse]:
        try:
            self.fake.enter("WatchJob", context)
            for job in self.fake.watch(request.job_id):
                yield gw.WatchJobResponse(job=job)
        except Abort as abort:
            context.set_trailing_metadata(abort.trailers())
            context.abort(abort.code, abort.message)

    def CancelJob(self, request: Any, context: Any) -> Any:
        return self._run(
            "CancelJob",
            context,
            lambda: gw.CancelJobResponse(job=self.fake.cancel_job(request.job_id)),
        )

    def DownloadOutput(self, request: Any, context: Any) -> Any:
        return self._run("DownloadOutput", context, lambda: self.fake.download(request))

    def ListOperations(self, request: Any, context: Any) -> Any:
        return self._run("ListOperations", context, self.fake.list_operations)

    def GetImageMetadata(self, request: Any, context: Any) -> Any:
        return self._run(
            "GetImageMetadata", context, lambda: self.fake.get_image_metadata(request.image_id)
        )

    def SearchImages(self, request: Any, context: Any) -> Any:
        return self._run("SearchImages", context, lambda: self.fake.search_images(request))

    def FindSimilar(self, request: Any, context: Any) -> Any:
        return self._run("FindSimilar", context, lambda: self.fake.find_similar(request))

    def GetFleetStatus(self, request: Any, context: Any) -> Any:
        return self._run(
            "GetFleetStatus", context, lambda: gw.GetFleetStatusResponse(status=self.fake.fleet)
        )


class AsyncServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """The same fake behind grpc.aio; the fake itself never blocks except for `delays`."""

    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake

    async def _run(self, method: str, context: Any, action: Any) -> Any:
        try:
            self.fake.enter(method, context)
            return action()
        except Abort as abort:
            await context.abort(abort.code, abort.message, trailing_metadata=abort.trailers())

    async def UploadImage(self, request_iterator: Any, context: Any) -> Any:
        requests = [r async for r in request_iterator]
        return await self._run("UploadImage", context, lambda: self.fake.upload(requests))

    async def CreateJob(self, request: Any, context: Any) -> Any:
        self.fake.attempt_keys.append(request.idempotency_key)
        return await self._run("CreateJob", context, lambda: self.fake.create_job(request))

    async def PlanJob(self, request: Any, context: Any) -> Any:
        return await self._run("PlanJob", context, lambda: self.fake.plan_job(request))

    async def GetJob(self, request: Any, context: Any) -> Any:
        return await self._run(
            "GetJob", context, lambda: gw.GetJobResponse(job=self.fake.get_job(request.job_id))
        )

    async def ListJobs(self, request: Any, context: Any) -> Any:
        return await self._run("ListJobs", context, lambda: self.fake.list_jobs(request))

    async def WatchJob(self, request: Any, context: Any) -> AsyncIterator[gw.WatchJobResponse]:
        try:
            self.fake.enter("WatchJob", context)
            for job in self.fake.watch(request.job_id):
                yield gw.WatchJobResponse(job=job)
        except Abort as abort:
            await context.abort(abort.code, abort.message, trailing_metadata=abort.trailers())

    async def CancelJob(self, request: Any, context: Any) -> Any:
        return await self._run(
            "CancelJob",
            context,
            lambda: gw.CancelJobResponse(job=self.fake.cancel_job(request.job_id)),
        )

    async def DownloadOutput(self, request: Any, context: Any) -> Any:
        return await self._run("DownloadOutput", context, lambda: self.fake.download(request))

    async def ListOperations(self, request: Any, context: Any) -> Any:
        return await self._run("ListOperations", context, self.fake.list_operations)

    async def GetImageMetadata(self, request: Any, context: Any) -> Any:
        return await self._run(
            "GetImageMetadata", context, lambda: self.fake.get_image_metadata(request.image_id)
        )

    async def SearchImages(self, request: Any, context: Any) -> Any:
        return await self._run("SearchImages", context, lambda: self.fake.search_images(request))

    async def FindSimilar(self, request: Any, context: Any) -> Any:
        return await self._run("FindSimilar", context, lambda: self.fake.find_similar(request))

    async def GetFleetStatus(self, request: Any, context: Any) -> Any:
        return await self._run(
            "GetFleetStatus", context, lambda: gw.GetFleetStatusResponse(status=self.fake.fleet)
        )
