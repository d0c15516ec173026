"""The gateway's ListOperations: every operation of the contract, as its service answered or, while
that service does not answer, as the proto describes it; CreateJob's "unavailable" from answers only."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from services.gateway import capabilities
from services.gateway.capabilities import CapabilityCache


async def _imaging(timeout: float) -> operations_pb2.Capabilities:
    return operations_pb2.Capabilities(
        operations=[rules.operation_info(name, "imaging") for name in ("resize", "rotate")]
    )


async def _inference(timeout: float) -> operations_pb2.Capabilities:
    info = rules.operation_info("denoise", "inference")
    info.available, info.unavailable_reason = False, "no denoising model is loaded"
    return operations_pb2.Capabilities(operations=[info])


async def _down(timeout: float) -> operations_pb2.Capabilities:
    raise grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
    )


async def test_every_operation_of_the_contract_is_listed() -> None:
    cache = CapabilityCache(
        {"imaging": _imaging, "inference": _inference, "metadata": _down}, ttl_s=60
    )
    listed = await cache.operations()
    assert [op.name for op in listed] == list(rules.OPERATIONS)
    by_name = {op.name: op for op in listed}
    assert by_name["resize"].available and by_name["resize"].service == "imaging"
    # The metadata service did not answer: its operation is described from the proto.
    meta = by_name["extract_metadata"]
    assert (meta.service, meta.available) == ("metadata", False)
    assert meta.unavailable_reason == "the metadata service did not answer"
    assert meta.description == rules.OPERATIONS["extract_metadata"].description
    # Imaging answered without crop (an older worker, say).
    assert by_name["crop"].unavailable_reason == "the imaging service does not offer it"
    # CreateJob refuses only what a worker said it cannot run, not what did not answer.
    assert await cache.unavailable() == {"denoise": "no denoising model is loaded"}


async def test_a_hung_service_does_not_hold_the_callers_once_answered() -> None:
    """After the first answer, a call never waits for the services: past the TTL it gets the
    kept answer at once while one refresh runs in the background, so a worker that hangs
    (a stopped process: each ask waits the timeout) does not stall CreateJob."""
    hang = asyncio.Event()
    asked = 0

    async def imaging(timeout: float) -> operations_pb2.Capabilities:
        nonlocal asked
        asked += 1
        if asked > 1:
            await hang.wait()  # hangs until the test lets it go
        return await _imaging(timeout)

    cache = CapabilityCache({"imaging": imaging}, ttl_s=0.01)
    first = await cache.answers()
    await asyncio.sleep(0.02)  # past the TTL
    for _ in range(20):  # a call that waited for the refresh would wait for ever
        assert await asyncio.wait_for(cache.answers(), timeout=1.0) == first
    await asyncio.sleep(0.01)  # the background refresh starts (and hangs)
    assert asked == 2  # one refresh in flight, not one per call
    hang.set()
    await asyncio.sleep(0.03)  # it finishes; its answer is past the TTL again
    await cache.answers()
    await asyncio.sleep(0.01)
    assert asked == 3  # a finished refresh lets the next stale call start another


async def test_a_partial_answer_is_asked_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that did not answer is asked again after PARTIAL_TTL_S, not after the TTL, and
    is listed as soon as it answers; a complete answer is kept the whole TTL."""
    monkeypatch.setattr(capabilities, "PARTIAL_TTL_S", 0.01)
    up = False

    async def metadata(timeout: float) -> operations_pb2.Capabilities:
        if not up:
            return await _down(timeout)
        return operations_pb2.Capabilities(
            operations=[rules.operation_info("extract_metadata", "metadata")]
        )

    cache = CapabilityCache({"imaging": _imaging, "metadata": metadata}, ttl_s=60)
    listed = {op.name: op for op in await cache.operations()}
    assert listed["extract_metadata"].unavailable_reason == "the metadata service did not answer"
    up = True
    await asyncio.sleep(0.02)
    await cache.answers()  # stale: starts the refresh
    await asyncio.sleep(0.01)
    listed = {op.name: op for op in await cache.operations()}
    assert listed["extract_metadata"].available
    due = cache._cached[0] if cache._cached else 0.0
    assert due - time.monotonic() > 30  # complete: kept for the TTL
