"""PlanJob and CreateJob's validation through imaging's PlanPipeline, against fakes of the ports."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message

from pixmesh import rules
from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import FailedPrecondition, InvalidArgument, ServiceError, invalid
from tests.services.gateway.fakes import IMAGE, Jobs, Op, Planner, gateway, rpc_error


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


async def _nothing_unavailable() -> dict[str, str]:
    return {}


async def test_a_pipeline_whose_parameters_passed_is_not_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    real = rules.violations

    def counting(message: Message, path: str = "") -> list[rules.Violation]:
        checked.append(path)
        return real(message, path)

    monkeypatch.setattr(rules, "violations", counting)
    jobs = Jobs()
    service = gateway(Planner(), jobs)
    service.capabilities.unavailable = _nothing_unavailable  # type: ignore[method-assign]
    resize = Op(resize=operations_pb2.Resize(width=64))

    def denoise(sigma: float, auto: bool = False) -> list[operations_pb2.Operation]:
        return [Op(denoise=operations_pb2.Denoise(sigma=sigma, auto=auto)), resize]

    for _ in range(3):
        await service.create_job("t", "img_1", denoise(25), "", 5.0)
    await service.plan_job("t", "img_1", "", denoise(25), None, 5.0)
    assert checked == ["operations[0]"]  # the denoise once; imaging plans the resize
    # Another parameter is another pipeline.
    await service.create_job("t", "img_1", denoise(30), "", 5.0)
    assert len(checked) == 2
    # A refusal is not kept: checked (and refused) every time.
    for _ in range(2):
        with pytest.raises(InvalidArgument) as err:
            await service.create_job("t", "img_1", denoise(25, auto=True), "", 5.0)
        assert err.value.violations[0].field == "operations[0].denoise.sigma"
    assert len(checked) == 4
    assert len(jobs.created) == 4
