"""PlanJob and CreateJob's validation through imaging's PlanPipeline, against fakes of the ports."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc
import pytest

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.jobs.v1 import jobs_pb2
from services.gateway.service import GatewayService
from services.gateway.settings import GatewaySettings
from services.runtime.errors import FailedPrecondition, InvalidArgument, ServiceError, invalid
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

    async def __call__(
        self, image: image_pb2.Image, ops: Sequence[Op], timeout: float
    ) -> operations_pb2.PipelinePlan:
        assert image == IMAGE and 0 < timeout <= 3.0
        self.seen.append(list(ops))
        if self.error is not None:
            raise self.error
        return operations_pb2.PipelinePlan(
            operations=[operations_pb2.PlannedOperation(operation=op) for op in ops],
            output_width=200,
            output_height=200,
            output_format=[op.convert.format for op in ops if op.HasField("convert")][-1],
        )


class Repo:
    async def get_image(self, tenant_id: str, image_id: str) -> image_pb2.Image | None:
        return IMAGE if image_id == IMAGE.image_id else None


class Capabilities:
    async def unavailable(self) -> dict[str, str]:
        return {"denoise": "no model loaded"}


class Jobs:
    def __init__(self) -> None:
        self.created: list[jobs_pb2.CreateJobRequest] = []

    async def CreateJob(
        self, req: jobs_pb2.CreateJobRequest, timeout: float
    ) -> jobs_pb2.CreateJobResponse:
        self.created.append(req)
        return jobs_pb2.CreateJobResponse(
            job=job_pb2.Job(job_id="job_1", operations=req.operations)
        )


def gateway(planner: Planner, jobs: Jobs | None = None) -> GatewayService:
    settings = GatewaySettings(presets=json.loads(json.dumps({"thumb": THUMB})))
    return GatewayService(
        settings,
        Repo(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # idempotency: no keys in these tests
        None,  # type: ignore[arg-type]  # storage
        jobs or Jobs(),  # type: ignore[arg-type]
        Capabilities(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # events
        planner,
    )


async def test_plan_job_expands_the_preset_resolves_auto_and_creates_nothing() -> None:
    planner, jobs = Planner(), Jobs()
    extra = Op(grayscale=operations_pb2.Grayscale())
    resp = await gateway(planner, jobs).plan_job(
        "t", "img_1", "thumb", [extra], "image/avif,image/webp,*/*", 5.0
    )
    assert resp.image == IMAGE
    names = [p.operation.WhichOneof("op") for p in resp.plan.operations]
    assert names == ["resize", "convert", "grayscale"]
    assert planner.seen[0][1].convert == operations_pb2.Convert(format=image_pb2.AVIF)
    assert resp.plan.output_format == image_pb2.AVIF
    assert jobs.created == []


async def test_create_job_stores_the_pipeline_imaging_validated() -> None:
    planner, jobs = Planner(), Jobs()
    job = await gateway(planner, jobs).create_job(
        "t", "img_1", [], "", 5.0, preset="thumb", accept="image/webp"
    )
    stored = list(jobs.created[0].operations)
    assert stored == planner.seen[0]
    assert stored[1].convert == operations_pb2.Convert(format=image_pb2.WEBP)
    assert job.operations[1].convert.format == image_pb2.WEBP


async def test_imaging_rejections_reach_the_client_unchanged_and_no_job_is_made() -> None:
    error = invalid("operations[0].crop.x", "outside the 4000x3000 image")
    planner, jobs = Planner(rpc_error(error)), Jobs()
    crop = Op(crop=operations_pb2.Crop(x=3990, width=100, height=100))
    with pytest.raises(ServiceError) as err:
        await gateway(planner, jobs).create_job("t", "img_1", [crop], "", 5.0)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.violations[0].field == "operations[0].crop.x"
    assert jobs.created == []


async def test_unavailable_imaging_falls_back_to_coarse_checks_for_create_only() -> None:
    down = rpc_error(ServiceError("imaging down", code=grpc.StatusCode.UNAVAILABLE))
    resize = Op(resize=operations_pb2.Resize(width=800))
    jobs = Jobs()
    await gateway(Planner(down), jobs).create_job("t", "img_1", [resize], "", 5.0)
    assert len(jobs.created) == 1
    huge = Op(resize=operations_pb2.Resize(width=50_000))
    with pytest.raises(InvalidArgument):  # the coarse size check still applies
        await gateway(Planner(down), jobs).create_job("t", "img_1", [huge], "", 5.0)
    with pytest.raises(ServiceError) as err:  # a dry run without imaging cannot answer
        await gateway(Planner(down)).plan_job("t", "img_1", "", [resize], None, 5.0)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE


async def test_gateway_checks_run_before_imaging_is_asked() -> None:
    planner = Planner()
    service = gateway(planner)
    with pytest.raises(InvalidArgument):
        await service.plan_job("t", "img_1", "", [], None, 5.0)
    with pytest.raises(FailedPrecondition):
        await service.plan_job("t", "img_1", "", [Op(denoise=operations_pb2.Denoise())], None, 5.0)
    with pytest.raises(InvalidArgument) as err:
        await service.plan_job("t", "img_1", "nope", [], None, 5.0)
    assert err.value.reason == "UNKNOWN_PRESET"
    assert planner.seen == []


async def test_list_operations_shows_the_presets() -> None:
    service = gateway(Planner())
    service.capabilities.operations = _no_ops  # type: ignore[method-assign]
    resp = await service.list_operations()
    assert [p.name for p in resp.presets] == ["thumb"]
    assert resp.presets[0].operations[1].convert.auto


async def _no_ops() -> list[operations_pb2.OperationInfo]:
    return []
