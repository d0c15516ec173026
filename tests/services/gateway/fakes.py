"""Fakes of the gateway service's ports (imaging's planner, the repository, the capabilities, the
jobs service, the idempotency cache) for unit tests of GatewayService."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.jobs.v1 import jobs_pb2
from services.gateway.service import GatewayService
from services.gateway.settings import GatewaySettings
from services.runtime.errors import NotFound, ServiceError
from services.runtime.server import status_details

Op = operations_pb2.Operation
IMAGE = image_pb2.Image(image_id="img_1", format=image_pb2.JPEG, width=4000, height=3000)
THUMB = [{"resize": {"width": 200, "height": 200, "mode": "FILL"}}, {"convert": {"auto": True}}]


def rpc_error(err: ServiceError) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata(
        ("grpc-status-details-bin", status_details(err).SerializeToString())
    )
    return grpc.aio.AioRpcError(err.code, grpc.aio.Metadata(), trailers, err.message)


class Planner:
    """Imaging's PlanPipeline: records what it was asked, answers a plan or raises `error`."""

    def __init__(self, error: grpc.aio.AioRpcError | None = None) -> None:
        self.error = error
        self.seen: list[list[Op]] = []
        self.seen_renditions: list[list[operations_pb2.Rendition]] = []

    async def __call__(
        self,
        image: image_pb2.Image,
        ops: Sequence[Op],
        renditions: Sequence[operations_pb2.Rendition],
        timeout: float,
    ) -> operations_pb2.PipelinePlan:
        assert image == IMAGE and 0 < timeout <= 3.0
        self.seen.append(list(ops))
        self.seen_renditions.append(list(renditions))
        if self.error is not None:
            raise self.error
        plan = _plan(ops, image_pb2.JPEG)
        for r in renditions:
            plan.renditions.add(name=r.name, plan=_plan(r.operations, plan.output_format))
        return plan


def _plan(ops: Sequence[Op], fmt: image_pb2.ImageFormat.ValueType) -> operations_pb2.PipelinePlan:
    formats = [op.convert.format for op in ops if op.HasField("convert")]
    return operations_pb2.PipelinePlan(
        operations=[operations_pb2.PlannedOperation(operation=op) for op in ops],
        output_width=200,
        output_height=200,
        output_format=formats[-1] if formats else fmt,
    )


class Repo:
    async def get_image(self, tenant_id: str, image_id: str) -> image_pb2.Image | None:
        return IMAGE if image_id == IMAGE.image_id else None


class Capabilities:
    async def unavailable(self) -> dict[str, str]:
        return {"denoise": "no model loaded"}


class Jobs:
    """The jobs service: keeps what CreateJob was asked, answers GetJob for those jobs."""

    def __init__(self) -> None:
        self.created: list[jobs_pb2.CreateJobRequest] = []

    async def CreateJob(
        self, req: jobs_pb2.CreateJobRequest, timeout: float
    ) -> jobs_pb2.CreateJobResponse:
        self.created.append(req)
        return jobs_pb2.CreateJobResponse(job=self._job(len(self.created)))

    async def GetJob(self, req: jobs_pb2.GetJobRequest, timeout: float) -> jobs_pb2.GetJobResponse:
        number = int(req.job_id.removeprefix("job_"))
        if not 1 <= number <= len(self.created):
            raise rpc_error(NotFound(message=f"job {req.job_id} not found"))
        return jobs_pb2.GetJobResponse(job=self._job(number))

    def _job(self, number: int) -> job_pb2.Job:
        req = self.created[number - 1]
        return job_pb2.Job(
            job_id=f"job_{number}", operations=req.operations, renditions=req.renditions
        )


class Idempotency:
    """The Redis cache of idempotency keys, in memory."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], tuple[str, str]] = {}

    async def get(self, tenant_id: str, key: str) -> tuple[str, str] | None:
        return self.keys.get((tenant_id, key))

    async def remember(self, tenant_id: str, key: str, job_id: str, req_hash: str) -> None:
        self.keys.setdefault((tenant_id, key), (job_id, req_hash))


def gateway(
    planner: Planner,
    jobs: Jobs | None = None,
    presets: Mapping[str, list[dict[str, Any]]] | None = None,
    **settings: Any,
) -> GatewayService:
    raw = json.loads(json.dumps({"thumb": THUMB} if presets is None else presets))
    return GatewayService(
        GatewaySettings(presets=raw, **settings),
        Repo(),  # type: ignore[arg-type]
        Idempotency(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # storage
        jobs or Jobs(),  # type: ignore[arg-type]
        Capabilities(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # events
        planner,
    )


class Clock:
    """A monotonic clock the test moves (`now`), for caches' timers."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
