"""The gateway's plan cache: imaging is asked once per request shape and fingerprint; a changed
fingerprint, a changed request or a refusal reaches imaging again."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.gateway.capabilities import CapabilityCache
from services.gateway.plans import PlanCache
from services.runtime.errors import invalid
from tests.services.gateway.fakes import IMAGE, Op, rpc_error

RESIZE = [Op(resize=operations_pb2.Resize(width=800))]


class Imaging:
    """PlanPipeline: counts the calls, answers under `fingerprint` (or raises `error`)."""

    def __init__(self, fingerprint: str = "fp1") -> None:
        self.fingerprint = fingerprint
        self.calls = 0
        self.error: grpc.aio.AioRpcError | None = None

    async def plan(
        self,
        image: image_pb2.Image,
        ops: Sequence[operations_pb2.Operation],
        renditions: Sequence[operations_pb2.Rendition],
        timeout: float,
    ) -> tuple[operations_pb2.PipelinePlan, str]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        plan = operations_pb2.PipelinePlan(
            output_width=image.width // 5, output_format=image.format
        )
        plan.operations.extend(operations_pb2.PlannedOperation(operation=op) for op in ops)
        return plan, self.fingerprint


class Current:
    """The fingerprint the capabilities name; counts the refreshes asked for."""

    def __init__(self, value: str = "fp1") -> None:
        self.value = value
        self.expired = 0

    async def get(self) -> str:
        return self.value

    def expire(self) -> None:
        self.expired += 1


def _cache(imaging: Imaging, current: Current, maxsize: int = 100) -> PlanCache:
    return PlanCache(imaging.plan, current.get, current.expire, maxsize)


def _image(**changes: object) -> image_pb2.Image:
    image = image_pb2.Image()
    image.CopyFrom(IMAGE)
    for name, value in changes.items():
        setattr(image, name, value)
    return image


async def test_the_same_request_is_planned_once() -> None:
    imaging, current = Imaging(), Current()
    plans = _cache(imaging, current)
    first = await plans(IMAGE, RESIZE, [], 3.0)
    again = await plans(IMAGE, RESIZE, [], 3.0)
    assert again == first and imaging.calls == 1
    # Another image of the same shape (id, sha256, name, upload time differ) shares the plan.
    other = _image(image_id="img_2", sha256="ab" * 32, filename="b.jpg")
    assert await plans(other, RESIZE, [], 3.0) == first
    assert imaging.calls == 1 and current.expired == 0


async def test_what_the_plan_depends_on_is_in_the_key() -> None:
    imaging, current = Imaging(), Current()
    plans = _cache(imaging, current)
    await plans(IMAGE, RESIZE, [], 3.0)
    await plans(_image(width=4001), RESIZE, [], 3.0)  # the image's header facts
    await plans(_image(orientation=6), RESIZE, [], 3.0)
    await plans(_image(format=image_pb2.PNG), RESIZE, [], 3.0)
    await plans(IMAGE, [Op(resize=operations_pb2.Resize(width=801))], [], 3.0)  # the operations
    rendition = operations_pb2.Rendition(name="small", operations=RESIZE)
    await plans(IMAGE, RESIZE, [rendition], 3.0)  # the renditions
    assert imaging.calls == 6


async def test_a_plan_is_not_reused_once_imaging_names_another_fingerprint() -> None:
    imaging, current = Imaging("fp1"), Current("fp1")
    plans = _cache(imaging, current)
    await plans(IMAGE, RESIZE, [], 3.0)
    # Imaging restarted with other settings (or code): its capabilities name a new fingerprint.
    imaging.fingerprint = current.value = "fp2"
    await plans(IMAGE, RESIZE, [], 3.0)
    await plans(IMAGE, RESIZE, [], 3.0)
    assert imaging.calls == 2 and current.expired == 0


async def test_an_answer_under_another_fingerprint_refreshes_the_capabilities() -> None:
    # Imaging changed before the gateway's capabilities did: the plan is kept under the
    # fingerprint it was made with, and the capabilities are asked again at once.
    imaging, current = Imaging("fp2"), Current("fp1")
    plans = _cache(imaging, current)
    await plans(IMAGE, RESIZE, [], 3.0)
    assert current.expired == 1
    await plans(IMAGE, RESIZE, [], 3.0)  # still "fp1" here: not reused under it
    assert imaging.calls == 2
    current.value = "fp2"  # the refresh came back
    await plans(IMAGE, RESIZE, [], 3.0)
    assert imaging.calls == 2


async def test_refusals_are_not_kept() -> None:
    imaging, current = Imaging(), Current()
    imaging.error = rpc_error(invalid("operations[0].resize.width", "too wide"))
    plans = _cache(imaging, current)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await plans(IMAGE, RESIZE, [], 3.0)
    assert imaging.calls == 2
    assert len(plans) == 0


async def test_no_fingerprint_no_reuse() -> None:
    # Imaging did not answer ListOperations (or is a version that names no fingerprint).
    imaging, current = Imaging(""), Current("")
    plans = _cache(imaging, current)
    await plans(IMAGE, RESIZE, [], 3.0)
    await plans(IMAGE, RESIZE, [], 3.0)
    assert imaging.calls == 2 and len(plans) == 0


async def test_the_cache_is_bounded_and_its_plans_are_not_the_callers() -> None:
    imaging, current = Imaging(), Current()
    plans = _cache(imaging, current, maxsize=2)
    for width in (4000, 4001, 4002):
        await plans(_image(width=width), RESIZE, [], 3.0)
    assert len(plans) == 2
    await plans(_image(width=4000), RESIZE, [], 3.0)  # the least recently used went
    assert imaging.calls == 4
    got = await plans(_image(width=4000), RESIZE, [], 3.0)
    got.output_width = 1  # a caller changing its plan changes nothing held
    assert (await plans(_image(width=4000), RESIZE, [], 3.0)).output_width == 800


async def _imaging_caps(timeout: float) -> operations_pb2.Capabilities:
    return operations_pb2.Capabilities(plan_fingerprint="fp-imaging")


async def _down(timeout: float) -> operations_pb2.Capabilities:
    raise grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
    )


async def test_the_capability_cache_names_each_services_fingerprint() -> None:
    answers = {"imaging": _imaging_caps, "metadata": _down}
    cache = CapabilityCache(answers, ttl_s=60)
    assert await cache.plan_fingerprint("imaging") == "fp-imaging"
    assert await cache.plan_fingerprint("metadata") == ""  # did not answer

    calls = 0

    async def counted(timeout: float) -> operations_pb2.Capabilities:
        nonlocal calls
        calls += 1
        return operations_pb2.Capabilities(plan_fingerprint=f"fp{calls}")

    cache = CapabilityCache({"imaging": counted}, ttl_s=60)
    assert await cache.plan_fingerprint("imaging") == "fp1"
    assert await cache.plan_fingerprint("imaging") == "fp1"  # cached
    cache.expire()
    assert await cache.plan_fingerprint("imaging") == "fp2"
