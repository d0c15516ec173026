"""The gateway's ListOperations: every operation of the contract, as its service answered or, while
that service does not answer, as the proto describes it; CreateJob's "unavailable" from answers only."""

from __future__ import annotations

import grpc

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
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
