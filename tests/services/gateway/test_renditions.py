"""Renditions through the gateway: presets expanded, `convert.auto` resolved, every check naming
the rendition's field, imaging's per-rendition plan returned, the jobs service given them all."""

from __future__ import annotations

import grpc
import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.gateway.v1 import gateway_pb2
from services.gateway.api import GatewayApi
from services.gateway.auth import SCOPES, Principal
from services.runtime.errors import FailedPrecondition, InvalidArgument, ServiceError, invalid
from tests.services.gateway.fakes import THUMB, Jobs, Op, Planner, gateway, rpc_error

Rendition = operations_pb2.Rendition
WEBP = Op(convert=operations_pb2.Convert(format=image_pb2.WEBP))
AUTO = Op(convert=operations_pb2.Convert(auto=True))
GREY = Op(grayscale=operations_pb2.Grayscale())
DENOISE = Op(denoise=operations_pb2.Denoise(auto=True))
PRESETS = {"thumb": THUMB, "clean": [{"denoise": {"auto": True}}, {"flip": {}}]}


def resize(width: int) -> Op:
    return Op(resize=operations_pb2.Resize(width=width))


async def test_renditions_are_expanded_resolved_planned_and_passed_to_jobs() -> None:
    planner, jobs = Planner(), Jobs()
    renditions = [
        Rendition(name="thumb", preset="thumb", operations=[GREY]),
        Rendition(name="medium", operations=[resize(800), AUTO]),
        Rendition(name="original"),
    ]
    job = await gateway(planner, jobs, PRESETS).create_job(
        "t", "img_1", [], "", 5.0, renditions=renditions, accept="image/webp,*/*"
    )
    sent = list(jobs.created[0].renditions)
    webp_auto = Op(convert=operations_pb2.Convert(format=image_pb2.WEBP))
    thumb_resize = Op(resize=operations_pb2.Resize(width=200, height=200, mode=2))
    assert sent == [
        Rendition(name="thumb", operations=[thumb_resize, webp_auto, GREY]),  # preset first
        Rendition(name="medium", operations=[resize(800), webp_auto]),
        Rendition(name="original"),
    ]
    assert list(jobs.created[0].operations) == []  # may be empty with renditions
    assert planner.seen_renditions == [sent]  # imaging validated exactly what is stored
    assert list(job.renditions) == sent
    assert renditions[0].preset == "thumb" and renditions[1].operations[1].convert.auto  # untouched


async def test_plan_job_returns_the_plan_of_every_rendition() -> None:
    planner, jobs = Planner(), Jobs()
    resp = await gateway(planner, jobs).plan_job(
        "t",
        "img_1",
        "",
        [resize(1000)],
        None,
        5.0,
        [Rendition(name="a", operations=[WEBP]), Rendition(name="b", preset="thumb")],
    )
    assert [(r.name, r.plan.output_format) for r in resp.plan.renditions] == [
        ("a", image_pb2.WEBP),
        ("b", image_pb2.JPEG),  # auto with no Accept: the input's format
    ]
    assert [len(r.plan.operations) for r in resp.plan.renditions] == [1, 2]
    assert jobs.created == []


@pytest.mark.parametrize(
    ("renditions", "field", "reason"),
    [
        ([Rendition(name="a"), Rendition(name="b", operations=[DENOISE])],
         "renditions[1].operations[0]", "NOT_A_RENDITION_OPERATION"),
        ([Rendition(name="a", preset="clean")], "renditions[0].preset", "NOT_A_RENDITION_OPERATION"),
        ([Rendition(name="a"), Rendition(name="b", preset="nope")],
         "renditions[1].preset", "UNKNOWN_PRESET"),
        ([Rendition(name="a"), Rendition(name="a")], "renditions[1].name", "DUPLICATE_RENDITION"),
        ([Rendition(name="Big Thumb")], "renditions[0].name", "BAD_RENDITION_NAME"),
        ([Rendition(name="")], "renditions[0].name", "BAD_RENDITION_NAME"),
        ([Rendition(name=f"r{i}") for i in range(11)], "renditions", "TOO_MANY_RENDITIONS"),
        ([Rendition(name="a", operations=[Op()])], "renditions[0].operations[0]",
         "UNKNOWN_OPERATION"),
        ([Rendition(name="a", operations=[
            Op(convert=operations_pb2.Convert(auto=True, format=image_pb2.PNG))])],
         "renditions[0].operations[0].convert.format", "INVALID_ARGUMENT"),
        ([Rendition(name="a"), Rendition(name="b", operations=[GREY] * 15)],
         "renditions[1].operations", "TOO_MANY_OPERATIONS"),
    ],
)  # fmt: skip
async def test_bad_renditions_are_refused_with_the_field_before_imaging_is_asked(
    renditions: list[Rendition], field: str, reason: str
) -> None:
    planner, jobs = Planner(), Jobs()
    service = gateway(planner, jobs, PRESETS)
    for call in (
        service.create_job("t", "img_1", [resize(800), GREY], "", 5.0, renditions=renditions),
        service.plan_job("t", "img_1", "", [resize(800), GREY], None, 5.0, renditions),
    ):
        with pytest.raises(InvalidArgument) as err:
            await call
        assert (err.value.violations[0].field, err.value.reason) == (field, reason)
    assert planner.seen == [] and jobs.created == []


async def test_the_job_and_each_rendition_together_fit_max_operations() -> None:
    planner = Planner()
    service = gateway(planner, max_operations=4)
    fits = [Rendition(name="a", operations=[GREY, WEBP]), Rendition(name="b", operations=[GREY])]
    await service.plan_job("t", "img_1", "", [resize(800), GREY], None, 5.0, fits)
    with pytest.raises(InvalidArgument) as err:  # the preset's two operations count too
        await service.plan_job(
            "t",
            "img_1",
            "",
            [resize(800), GREY],
            None,
            5.0,
            [Rendition(name="a", preset="thumb", operations=[GREY])],
        )
    assert err.value.violations[0].field == "renditions[0].operations"
    with pytest.raises(InvalidArgument) as err:  # neither operations nor renditions
        await service.plan_job("t", "img_1", "", [], None, 5.0, [])
    assert err.value.violations[0].field == "operations"
    assert len(planner.seen) == 1


async def test_imaging_rejections_of_a_rendition_reach_the_client_unchanged() -> None:
    error = invalid("renditions[0].operations[0].crop.x", "outside the 200x200 image")
    planner, jobs = Planner(rpc_error(error)), Jobs()
    crop = Op(crop=operations_pb2.Crop(x=300, width=10, height=10))
    with pytest.raises(ServiceError) as err:
        await gateway(planner, jobs).create_job(
            "t",
            "img_1",
            [resize(200)],
            "",
            5.0,
            renditions=[Rendition(name="a", operations=[crop])],
        )
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.violations[0].field == "renditions[0].operations[0].crop.x"
    assert jobs.created == []


async def test_without_imaging_the_coarse_checks_cover_renditions() -> None:
    down = rpc_error(ServiceError("imaging down", code=grpc.StatusCode.UNAVAILABLE))
    jobs = Jobs()
    ok = [Rendition(name="a", operations=[resize(800)])]
    await gateway(Planner(down), jobs).create_job("t", "img_1", [], "", 5.0, renditions=ok)
    assert list(jobs.created[0].renditions) == ok
    huge = [Rendition(name="a"), Rendition(name="b", operations=[GREY, resize(50_000)])]
    with pytest.raises(InvalidArgument) as err:
        await gateway(Planner(down), jobs).create_job("t", "img_1", [], "", 5.0, renditions=huge)
    assert err.value.violations[0].field == "renditions[1].operations[1].resize.width"
    assert len(jobs.created) == 1


async def test_an_unavailable_job_operation_still_fails_with_renditions() -> None:
    with pytest.raises(FailedPrecondition):
        await gateway(Planner()).plan_job(
            "t", "img_1", "", [DENOISE], None, 5.0, [Rendition(name="a")]
        )


async def test_idempotency_covers_renditions() -> None:
    jobs = Jobs()
    service = gateway(Planner(), jobs)
    first = [Rendition(name="a", operations=[WEBP])]
    job = await service.create_job("t", "img_1", [GREY], "key-1", 5.0, renditions=first)
    again = await service.create_job("t", "img_1", [GREY], "key-1", 5.0, renditions=first)
    assert again.job_id == job.job_id and len(jobs.created) == 1
    for other in ([Rendition(name="b", operations=[WEBP])], [], [*first, Rendition(name="c")]):
        with pytest.raises(FailedPrecondition) as err:
            await service.create_job("t", "img_1", [GREY], "key-1", 5.0, renditions=other)
        assert err.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # The same request spelled with the preset hashes like its expansion.
    thumb = [Rendition(name="t", preset="thumb")]
    expanded = [Rendition(name="t", operations=service.presets["thumb"])]
    await service.create_job("t", "img_1", [GREY], "key-2", 5.0, renditions=thumb)
    same = await service.create_job("t", "img_1", [GREY], "key-2", 5.0, renditions=expanded)
    assert same.job_id == "job_2" and len(jobs.created) == 2


async def test_list_operations_shows_max_renditions() -> None:
    service = gateway(Planner(), max_renditions=3)
    service.capabilities.operations = _no_ops  # type: ignore[method-assign]
    limits = (await service.list_operations()).limits
    assert (limits.max_renditions, limits.max_operations) == (3, 16)


async def test_list_operations_shows_the_video_limits() -> None:
    service = gateway(
        Planner(), max_video_bytes=2048, max_video_duration_s=60.0, max_video_streams=4
    )
    service.capabilities.operations = _no_ops  # type: ignore[method-assign]
    limits = (await service.list_operations()).limits
    assert (limits.max_video_bytes, limits.max_video_duration_s, limits.max_video_streams) == (
        2048,
        60.0,
        4,
    )


async def _no_ops() -> list[operations_pb2.OperationInfo]:
    return []


class Context:
    """The bits of a grpc.aio servicer context the API reads."""

    def __init__(self, *metadata: tuple[str, str]) -> None:
        self.metadata = (("authorization", "Bearer key"), *metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float:
        return 5.0


async def test_the_grpc_api_passes_renditions_and_accept_through() -> None:
    planner, jobs = Planner(), Jobs()
    service = gateway(planner, jobs)

    async def tenant(authorization: str | None) -> Principal:
        return Principal("t", "key_1", SCOPES)

    service.authenticate = tenant  # type: ignore[method-assign]
    api = GatewayApi(service, service.settings, None)  # type: ignore[arg-type]
    renditions = [Rendition(name="small", operations=[resize(100), AUTO])]
    ctx = Context(("accept", "image/webp"))
    plan = await api.PlanJob(
        gateway_pb2.PlanJobRequest(image_id="img_1", renditions=renditions),
        ctx,  # type: ignore[arg-type]
    )
    assert [r.plan.output_format for r in plan.plan.renditions] == [image_pb2.WEBP]
    created = await api.CreateJob(
        gateway_pb2.CreateJobRequest(image_id="img_1", renditions=renditions),
        ctx,  # type: ignore[arg-type]
    )
    assert [r.name for r in created.job.renditions] == ["small"]
    assert jobs.created[0].renditions[0].operations[1].convert.format == image_pb2.WEBP
