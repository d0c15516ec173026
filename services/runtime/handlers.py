"""A gRPC method handler with its behaviour wrapped, for the server interceptors (errors, metrics,
service tokens): grpc.aio has one handler constructor per call shape, chosen here once."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Wrap,
    stream: Wrap,
    deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour passed through `unary` (methods answering once) or `stream`
    (methods streaming their answers); serializers kept unless `deserializer` replaces the
    request's. A handler without behaviour is returned as it is."""
    des, ser = deserializer or handler.request_deserializer, handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), des, ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), des, ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), des, ser)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), des, ser)
    return handler


# grpc ships no type stubs, so its base class is Any to mypy.
class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A server interceptor that wraps every method handler: subclasses say how in `wrap`.

    `wrap` depends on the handler and the call's method only, so its result is kept per method
    and reused while the handler it wrapped comes back (the same object: the servicer's, or an
    inner interceptor's kept one); a new handler is wrapped again. grpc.aio asks the interceptors
    for a handler on every call, and building it again (a closure and a handler tuple per
    interceptor) was a few microseconds of each RPC (bench/rpc_overhead.py)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED
            return None
        method = handler_call_details.method
        kept = self._kept.get(method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self.wrap(handler, handler_call_details)
        # Methods are a fixed set (unknown ones never get here): the dict stays that small.
        self._kept[method] = (handler, wrapped)
        return wrapped

    def forget(self) -> None:
        """Wrap every handler again from the next call on (what `wrap` reads has changed)."""
        self._kept.clear()

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class ClosingStreams(WrappingInterceptor):
    """Answers every streaming method by writing its responses itself (`context.write`) and
    closing the handler's generator in the RPC's own task, whether the stream ends, the client
    leaves or a write fails. grpc.aio iterates a handler's generator without ever closing it
    (grpc/grpc#42295): a stream the client left stayed suspended at a `yield` until the garbage
    collector closed it from another context, where the tracing interceptor's `with` blocks
    could not restore theirs and logged "Failed to detach context" with a traceback
    (open-telemetry/opentelemetry-python-contrib#2357). The outermost interceptor."""

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        return rewrap(handler, _unchanged, _written)


def _unchanged(behavior: Callable[..., Any]) -> Callable[..., Any]:
    return behavior


def _written(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def write_all(request: Any, context: grpc.aio.ServicerContext) -> None:
        responses = behavior(request, context)
        if inspect.isawaitable(responses):  # a handler that writes its responses itself
            await responses
            return
        try:
            async for response in responses:
                await context.write(response)
        finally:
            await responses.aclose()

    return write_all
