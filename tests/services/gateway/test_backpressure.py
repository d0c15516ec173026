"""Admission control: a job is refused (QUEUE_FULL + RetryInfo) while a task queue its stages
need is at its limit; depths are cached ~1 s and shared; an unreadable depth admits the job."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from pixmesh.common.v1 import operations_pb2
from services.gateway.backpressure import Backpressure
from services.runtime.errors import ResourceExhausted
from tests.services.gateway.fakes import Jobs, Op, Planner, gateway

GREY = Op(grayscale=operations_pb2.Grayscale())
EXTRACT = Op(extract_metadata=operations_pb2.ExtractMetadata())


class Depths:
    """A fake depth source: fixed depths per service, counting the reads it answers."""

    def __init__(self, **depths: int) -> None:
        self.depths = depths
        self.reads: list[str] = []
        self.delay = 0.0
        self.error: Exception | None = None

    async def __call__(self, service: str) -> int:
        self.reads.append(service)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.depths.get(service, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_queue_under_the_limit_admits_and_one_at_it_refuses_with_retry_info() -> None:
    depths = Depths(imaging=9, metadata=10)
    bp = Backpressure(depths, 10, retry_after_s=7.0)
    await bp.check(["imaging"])
    with pytest.raises(ResourceExhausted) as info:
        await bp.check(["imaging", "metadata"])
    err = info.value
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "QUEUE_FULL"
    assert "metadata" in err.message and err.metadata["service"] == "metadata"
    assert err.retry_delay == 7.0 and err.retryable


async def test_zero_disables_the_check_without_reading_depths() -> None:
    depths = Depths(imaging=10**6)
    await Backpressure(depths, 0).check(["imaging"])
    assert depths.reads == []


async def test_depths_are_cached_for_the_ttl_then_read_again() -> None:
    depths, clock = Depths(imaging=5), Clock()
    bp = Backpressure(depths, 10, ttl_s=1.0, clock=clock)
    for _ in range(5):
        await bp.check(["imaging"])
    assert depths.reads == ["imaging"]
    depths.depths["imaging"] = 50
    clock.now += 0.5
    await bp.check(["imaging"])  # still the cached 5
    clock.now += 0.6
    with pytest.raises(ResourceExhausted):
        await bp.check(["imaging"])
    assert depths.reads == ["imaging", "imaging"]


async def test_concurrent_checks_share_one_read() -> None:
    depths = Depths(imaging=1)
    depths.delay = 0.05
    bp = Backpressure(depths, 10, timeout_s=1.0)
    await asyncio.gather(*(bp.check(["imaging"]) for _ in range(20)))
    assert depths.reads == ["imaging"]


async def test_an_unreadable_or_slow_depth_admits_and_is_not_retried_within_the_ttl() -> None:
    depths, clock = Depths(imaging=10**6), Clock()
    depths.error = ConnectionError("nats down")
    bp = Backpressure(depths, 10, clock=clock)
    await bp.check(["imaging"])
    await bp.check(["imaging"])
    assert depths.reads == ["imaging"]  # the failure is cached: no timeout paid per request

    depths.error, depths.delay = None, 1.0
    slow = Backpressure(depths, 10, timeout_s=0.02)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await slow.check(["imaging"])  # gives up after the timeout and admits
    assert loop.time() - start < 0.5


async def test_create_job_checks_only_the_services_its_stages_need() -> None:
    depths, jobs = Depths(imaging=0, metadata=10, inference=10), Jobs()
    svc = gateway(Planner(), jobs)
    svc.backpressure = Backpressure(depths, 10)
    await svc.create_job("t", "img_1", [GREY], "", 5.0)  # imaging only: admitted
    assert depths.reads == ["imaging"] and len(jobs.created) == 1
    with pytest.raises(ResourceExhausted) as info:
        await svc.create_job("t", "img_1", [EXTRACT, GREY], "", 5.0)
    assert info.value.metadata["service"] == "metadata"
    assert len(jobs.created) == 1  # the refused job never reached the jobs service
    assert "inference" not in depths.reads


async def test_an_idempotent_replay_is_answered_even_when_the_queue_is_full() -> None:
    depths, jobs = Depths(imaging=0), Jobs()
    svc = gateway(Planner(), jobs)
    svc.backpressure = Backpressure(depths, 10, ttl_s=0.0)
    first = await svc.create_job("t", "img_1", [GREY], "key-1", 5.0)
    depths.depths["imaging"] = 10
    again = await svc.create_job("t", "img_1", [GREY], "key-1", 5.0)
    assert again.job_id == first.job_id
    with pytest.raises(ResourceExhausted):
        await svc.create_job("t", "img_1", [GREY], "key-2", 5.0)
