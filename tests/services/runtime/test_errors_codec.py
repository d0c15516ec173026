"""One codec at both ends: what a service raises (encoded by the server's status_details) is what
the SDK catches, as its typed class, and what a service calling another one rebuilds."""

from __future__ import annotations

import grpc
import pytest

from pixmesh import errors
from services.gateway import errors as gateway_errors
from services.gateway.quotas import rate_limited
from services.runtime import errors as service_errors
from services.runtime.server import status_details


def _call(err: service_errors.ServiceError) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata(
        (errors.STATUS_DETAILS_KEY, status_details(err).SerializeToString())
    )
    return grpc.aio.AioRpcError(err.code, grpc.aio.Metadata(), trailers, err.message)


@pytest.mark.parametrize(
    ("raised", "cls"),
    [
        (gateway_errors.image_not_found("img_1"), errors.ImageNotFound),
        (gateway_errors.idempotency_mismatch(), errors.IdempotencyKeyReused),
        (rate_limited(2.0, 5), errors.RateLimited),
        (service_errors.invalid("x", "bad"), errors.InvalidArgument),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_what_a_service_raises_is_what_the_sdk_catches(
    raised: service_errors.ServiceError, cls: type[errors.PixmeshError]
) -> None:
    error = errors.from_rpc_error(_call(raised))
    assert type(error) is cls
    assert (error.reason, error.message, error.metadata) == (
        raised.reason,
        raised.message,
        dict(raised.metadata),
    )
    assert error.violations == tuple(raised.violations)
    assert error.retry_delay == raised.retry_delay

    again = service_errors.from_rpc_error(_call(raised))
    assert (again.code, again.reason, again.message, again.violations, again.retry_delay) == (
        raised.code,
        raised.reason,
        raised.message,
        tuple(raised.violations),
        raised.retry_delay,
    )
    assert again.retryable == (raised.code == grpc.StatusCode.RESOURCE_EXHAUSTED)


def _bare(code: grpc.StatusCode, text: str) -> grpc.aio.AioRpcError:
    """A status gRPC made itself (no details trailer): a sibling down, a transport failure."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), text)


def test_grpcs_own_status_text_is_not_passed_on() -> None:
    # A stopped metadata service gave REST clients "connections to all backends failing; last
    # error: UNKNOWN: ipv4:127.0.0.1:50055: Failed to connect to remote host: ...".
    text = (
        "connections to all backends failing; last error: UNKNOWN: ipv4:127.0.0.1:50055: "
        "Failed to connect to remote host: Connection refused"
    )
    down = service_errors.from_rpc_error(_bare(grpc.StatusCode.UNAVAILABLE, text))
    assert (down.code, down.reason, down.retryable) == (
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
        True,
    )
    assert down.retry_delay is not None and "127.0.0.1" not in down.message
    other = service_errors.from_rpc_error(
        _bare(grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2")
    )
    assert (other.code, other.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "RST_STREAM" not in other.message
