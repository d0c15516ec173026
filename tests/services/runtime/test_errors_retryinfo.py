"""RetryInfo: a ServiceError's retry_delay travels as google.rpc.RetryInfo in the status details,
comes back from a downstream hop, and the SDK reads it into PixmeshError.retry_delay."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2

from pixmesh import errors as sdk_errors
from services.runtime.errors import ResourceExhausted, from_rpc_error
from services.runtime.server import status_details


def _rpc_error(err: ResourceExhausted) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata(
        ("grpc-status-details-bin", status_details(err).SerializeToString())
    )
    return grpc.aio.AioRpcError(err.code, grpc.aio.Metadata(), trailers, err.message)


def test_retry_delay_is_packed_as_retry_info_and_read_back() -> None:
    err = ResourceExhausted(message="full", reason="QUEUE_FULL", retry_delay=2.5)
    packed = [
        d for d in status_details(err).details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)
    ]
    assert len(packed) == 1
    info = error_details_pb2.RetryInfo()
    packed[0].Unpack(info)
    assert info.retry_delay.seconds == 2 and info.retry_delay.nanos == 500_000_000

    back = from_rpc_error(_rpc_error(err))
    assert back.reason == "QUEUE_FULL" and back.retry_delay == 2.5 and back.retryable

    sdk = sdk_errors.from_rpc_error(_rpc_error(err))
    assert isinstance(sdk, sdk_errors.ResourceExhausted)
    assert sdk.reason == "QUEUE_FULL" and sdk.retry_delay == 2.5


def test_no_retry_delay_no_retry_info() -> None:
    err = ResourceExhausted(message="full")
    assert not any(
        d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status_details(err).details
    )
    assert from_rpc_error(_rpc_error(err)).retry_delay is None
