"""WrappingInterceptor keeps the handler it wrapped per method (grpc.aio asks every interceptor
for a handler on every call) and wraps again when the handler beneath it changes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import REGISTRY

from services.runtime import metrics
from services.runtime.handlers import WrappingInterceptor, rewrap


@dataclass
class _Details:
    method: str


class _Counting(WrappingInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self.wrapped: list[str] = []

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        self.wrapped.append(details.method)
        return rewrap(handler, lambda fn: fn, lambda fn: fn)


async def _echo(request: Any, context: Any) -> Any:
    return request


def _continuation(handlers: dict[str, grpc.RpcMethodHandler | None]) -> Any:
    async def continuation(details: Any) -> grpc.RpcMethodHandler | None:
        return handlers[details.method]

    return continuation


async def test_a_method_is_wrapped_once_while_its_handler_stays_the_same() -> None:
    first = grpc.unary_unary_rpc_method_handler(_echo)
    other = grpc.unary_unary_rpc_method_handler(_echo)
    handlers: dict[str, grpc.RpcMethodHandler | None] = {"/s/A": first, "/s/B": other}
    interceptor = _Counting()
    a = [
        await interceptor.intercept_service(_continuation(handlers), _Details("/s/A"))
        for _ in "123"
    ]
    assert a[0] is a[1] is a[2]
    assert a[0] is not first and a[0].unary_unary is _echo
    b = await interceptor.intercept_service(_continuation(handlers), _Details("/s/B"))
    assert b is not a[0]
    assert interceptor.wrapped == ["/s/A", "/s/B"]

    # A new handler beneath (an inner interceptor that wraps per call): wrapped again, and kept.
    handlers["/s/A"] = replaced = grpc.unary_unary_rpc_method_handler(_echo)
    again = await interceptor.intercept_service(_continuation(handlers), _Details("/s/A"))
    assert again is not a[0]
    assert await interceptor.intercept_service(_continuation(handlers), _Details("/s/A")) is again
    assert interceptor.wrapped == ["/s/A", "/s/B", "/s/A"]
    assert replaced is not first

    handlers["/s/C"] = None  # an unknown method: gRPC answers UNIMPLEMENTED
    assert await interceptor.intercept_service(_continuation(handlers), _Details("/s/C")) is None

    interceptor.forget()
    await interceptor.intercept_service(_continuation(handlers), _Details("/s/A"))
    assert interceptor.wrapped == ["/s/A", "/s/B", "/s/A", "/s/A"]


def _handled(service: str) -> float:
    labels = {
        "service": service,
        "grpc_service": "pixmesh.jobs.v1.JobsService",
        "grpc_method": "GetJob",
        "grpc_code": "OK",
    }
    return REGISTRY.get_sample_value("pixmesh_grpc_server_handled_total", labels) or 0.0


class _Context:
    def code(self) -> None:
        return None


async def test_the_metrics_wrapper_kept_for_a_method_follows_configure() -> None:
    first, second = (f"test-{uuid.uuid4().hex[:8]}" for _ in range(2))
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    continuation = _continuation({"/pixmesh.jobs.v1.JobsService/GetJob": handler})
    details = _Details("/pixmesh.jobs.v1.JobsService/GetJob")
    try:
        metrics.configure(first)
        interceptor = metrics.ServerMetricsInterceptor()
        kept = await interceptor.intercept_service(continuation, details)
        assert await interceptor.intercept_service(continuation, details) is kept
        await kept.unary_unary(None, _Context())
        metrics.configure(second)
        now = await interceptor.intercept_service(continuation, details)
        assert now is not kept
        await now.unary_unary(None, _Context())
        assert (_handled(first), _handled(second)) == (1, 1)
    finally:
        metrics.configure("pixmesh")
