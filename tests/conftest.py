"""Session fixtures: the embedded pixmesh stack on free loopback ports, started once, on demand.

Only unit tests (no servers, a few seconds):   .venv/bin/pytest -m "not integration"
                                               (or `make test-unit`)
Everything:                                    .venv/bin/pytest   (or `make test`)

Nothing starts unless a test asks for a fixture below: `infra` (NATS, Postgres, Valkey, SeaweedFS,
the OTLP sink, about 3 s) or `stack` (infra plus Envoy and the five services), or `cluster` (the
cluster mode: 3 NATS nodes, replicated services; its own servers, for one module). Ports are free
ones and data lives in pytest's tmp dir, so tests run fine next to a `make up`. Server logs are in
<tmp>/pixmesh0/run/logs/<name>.log; the path is printed when a server fails to start.

A test that kills or stops a service (`stack.kill_service("imaging")`) must bring it back
(`stack.start_service("imaging")`, waits for SERVING) before it ends: the stack is shared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from deploy.local import SERVICES, Ports, Stack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Variables every service ("*") or one service (by name) gets in tests: small limits keep
# redelivery, drain and timeout tests fast.
SERVICE_ENV: dict[str, dict[str, str]] = {
    "*": {"PIXMESH_DRAIN_TIMEOUT_S": "5"},
    # A killed imaging worker's task is redelivered after 3 s (tests/integration/test_recovery.py).
    "imaging": {"PIXMESH_ACK_WAIT_S": "3"},
    # Webhooks to the tests' loopback receivers, retried within a second
    # (tests/integration/test_webhooks.py).
    "gateway": {"PIXMESH_WEBHOOK_ALLOW_PRIVATE": "true"},
    "jobs": {
        "PIXMESH_WEBHOOK_ALLOW_PRIVATE": "true",
        "PIXMESH_WEBHOOK_BACKOFF_S": "0.2",
        "PIXMESH_WEBHOOK_BACKOFF_MAX_S": "1",
    },
}


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The servers without Envoy and the services; `stack` adds those to the same instance."""
    stack = Stack(
        tmp_path_factory.mktemp("pixmesh"),
        Ports.free(),
        durable=False,
        service_env=SERVICE_ENV,
    )
    stack.start_infra()
    try:
        yield stack
    finally:
        stack.stop()


# The cluster mode's variables: a SIGKILLed worker's tasks and a SIGKILLed jobs replica's events
# are delivered again after 4 s (tests/integration/test_cluster.py).
CLUSTER_SERVICE_ENV: dict[str, dict[str, str]] = {
    "*": {"PIXMESH_DRAIN_TIMEOUT_S": "5", "PIXMESH_ACK_WAIT_S": "4"},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make up-cluster` on free ports: 3 NATS nodes (R3 streams), two replicas of each service
    but inference ("imaging-1", "imaging-2"), Envoy over both gateways. Module-scoped: ~20
    processes are too many to keep beside the session's `stack` on a small machine. A test that
    kills a replica or node (`cluster.kill_service("imaging-2")`, `cluster.kill_nats(2)`) brings
    it back (`start_service`, `start_nats`)."""
    stack = Stack(
        tmp_path_factory.mktemp("pixmesh-cluster"),
        Ports.free(),
        durable=False,
        cluster=True,
        service_env=CLUSTER_SERVICE_ENV,
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def stack(infra: Stack) -> Stack:
    """The whole mesh, every service SERVING. Torn down with `infra` at the end of the session."""
    if not infra.is_running("envoy"):
        infra.start_envoy()
    infra.start_services(SERVICES)
    return infra


@pytest.fixture(scope="session")
def api_key(stack: Stack) -> str:
    """A key of tenant "dev" (scopes read, write), created with the gateway's admin CLI."""
    return stack.create_api_key("dev")


@pytest.fixture(scope="session")
def admin_key(stack: Stack) -> str:
    """A key of tenant "dev" with every scope (read, write, admin): what `make up` prints."""
    return stack.create_api_key("dev", "read,write,admin")


@pytest.fixture(scope="session")
def rest_url(stack: Stack) -> str:
    """REST/JSON base URL through Envoy, e.g. http://127.0.0.1:PORT."""
    return stack.rest_url


@pytest.fixture(scope="session")
def grpc_target(stack: Stack) -> str:
    """Public gRPC target through Envoy (SDK, grpcurl), e.g. 127.0.0.1:PORT."""
    return stack.grpc_target


@pytest.fixture(scope="session")
def service_addrs(stack: Stack) -> dict[str, str]:
    """Direct gRPC address of each service, bypassing Envoy: {"jobs": "127.0.0.1:PORT", ...}."""
    return {name: stack.service_addr(name) for name in SERVICES}


@pytest.fixture(scope="session")
def nats_url(infra: Stack) -> str:
    return infra.nats_url


@pytest.fixture(scope="session")
def database_url(infra: Stack) -> str:
    """postgresql://pixmesh@127.0.0.1:PORT/pixmesh (the role owns the database)."""
    return infra.database_url


@pytest.fixture(scope="session")
def scratch_database(infra: Stack) -> Callable[[str], Awaitable[str]]:
    """`await scratch_database("name")`: the URL of a new, empty database on the session's
    Postgres, owned by the services' role, for repository tests. Each caller names its own, so
    its schema and rows never meet another test module's or the running services' (whose
    database is `pixmesh`: a jobs service would relay a test's outbox rows)."""
    import asyncpg

    url = urlsplit(infra.database_url)
    role = url.username

    async def create(name: str) -> str:
        admin = await asyncpg.connect(
            url._replace(netloc=f"postgres@{url.hostname}:{url.port}", path="/postgres").geturl()
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        finally:
            await admin.close()
        return url._replace(path=f"/{name}").geturl()

    return create


@pytest.fixture(scope="session")
def redis_url(infra: Stack) -> str:
    return infra.redis_url


@pytest.fixture(scope="session")
def s3_bucket(infra: Stack) -> str:
    return infra.s3_bucket


@pytest.fixture(scope="session")
def s3_client(infra: Stack) -> S3Client:
    """boto3 S3 client for the stack's SeaweedFS (path-style, the stack's credentials)."""
    return infra.s3_client()


@pytest.fixture(scope="session")
def trace_file(infra: Stack) -> Path:
    """The OTLP sink's JSON-lines file; read it with deploy.observability.otlp_sink.read_spans."""
    return infra.trace_file
