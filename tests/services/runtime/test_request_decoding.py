"""A request that does not parse (a string field that is not UTF-8, bytes that are not protobuf)
is the caller's error: INVALID_ARGUMENT with a client-safe message, not grpc.aio's UNKNOWN
"Unexpected <class 'DecodeError'>: ..." (a 500 through Envoy, e.g. `GET /v1/jobs/%ff`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from pixmesh.gateway.v1 import gateway_pb2 as gw
from services.runtime.server import ErrorInterceptor

# A GetJobRequest whose job_id (field 1, length-delimited) is the byte 0xff: not UTF-8.
BAD_UTF8 = b"\x0a\x01\xff"
GOOD = gw.GetJobRequest(job_id="job_1").SerializeToString()


async def echo(request: gw.GetJobRequest, context: grpc.aio.ServicerContext) -> bytes:
    return request.job_id.encode()


async def count(requests: AsyncIterator[gw.GetJobRequest], context: Any) -> bytes:
    return str(len([r async for r in requests])).encode()


async def repeat(request: gw.GetJobRequest, context: Any) -> AsyncIterator[bytes]:
    yield request.job_id.encode()


async def store(request: gw.GetJobRequest, context: Any) -> bytes:
    """A handler whose query Postgres refused for the NUL in the request."""
    raise asyncpg.exceptions.CharacterNotInRepertoireError(
        'invalid byte sequence for encoding "UTF8": 0x00'
    )


class Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    def service(self, details: grpc.HandlerCallDetails) -> Any:
        parse = gw.GetJobRequest.FromString
        return {
            "/t/Echo": grpc.unary_unary_rpc_method_handler(echo, parse),
            "/t/Count": grpc.stream_unary_rpc_method_handler(count, parse),
            "/t/Repeat": grpc.unary_stream_rpc_method_handler(repeat, parse),
            "/t/Store": grpc.unary_unary_rpc_method_handler(store, parse),
        }.get(details.method)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    server.add_generic_rpc_handlers((Handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield ch
    finally:
        await server.stop(grace=None)


def _refused(error: grpc.aio.AioRpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "DecodeError" not in (error.details() or "")  # no internal text


@pytest.mark.parametrize("data", [BAD_UTF8, b"\xff\xff\xff\xff"])
async def test_a_unary_request_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, data: bytes
) -> None:
    call = channel.unary_unary("/t/Echo")
    assert await call(GOOD) == b"job_1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(data)
    _refused(caught.value)


async def test_a_streamed_request_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    assert await channel.stream_unary("/t/Count")(iter([GOOD, GOOD])) == b"2"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.stream_unary("/t/Count")(iter([GOOD, BAD_UTF8]))
    _refused(caught.value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [r async for r in channel.unary_stream("/t/Repeat")(BAD_UTF8)]
    _refused(caught.value)


async def test_a_nul_character_postgres_refuses_is_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    """Postgres text cannot hold U+0000: a request carrying one (an id, a file name, an
    idempotency key) failed its query and was answered INTERNAL (500)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/t/Store")(gw.GetJobRequest(job_id="a\0").SerializeToString())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "0x00" not in (caught.value.details() or "")  # the driver's text stays in the log
