"""Fixtures: the fake gateway served by sync grpc and by grpc.aio on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from pixmesh.gateway.v1 import gateway_pb2_grpc
from tests.pixmesh.fake_gateway import AsyncServicer, FakeGateway, SyncServicer

API_KEY = "pk_test_secret"


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Neither the developer's key nor a .pixmesh/api-key in the checkout may leak into tests.
    monkeypatch.delenv("PIXMESH_API_KEY", raising=False)
    monkeypatch.delenv("PIXMESH_TARGET", raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def sync_target(fake: FakeGateway) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(SyncServicer(fake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
async def aio_target(fake: FakeGateway) -> AsyncIterator[str]:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(AsyncServicer(fake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)
