"""The environment each service gets, read back through the services' own settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local import SERVICES, Ports, Stack
from services.runtime.settings import WorkerSettings


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(
        tmp_path,
        Ports.free(),
        service_env={"*": {"PIXMESH_ACK_WAIT_S": "3"}, "imaging": {"PIXMESH_CONCURRENCY": "4"}},
    )


def test_env_points_every_service_at_this_stack(stack: Stack) -> None:
    p = stack.ports
    for name in SERVICES:
        env = stack.service_env(name)
        assert env["PIXMESH_GRPC_PORT"] == str(p.service(name))
        assert env["PIXMESH_NATS_URL"] == f"nats://127.0.0.1:{p.nats}"
        assert env["PIXMESH_DATABASE_URL"] == f"postgresql://pixmesh@127.0.0.1:{p.postgres}/pixmesh"
        assert env["PIXMESH_REDIS_URL"] == f"redis://127.0.0.1:{p.valkey}/0"
        assert env["PIXMESH_S3_ENDPOINT"] == f"http://127.0.0.1:{p.s3}"
        assert env["PIXMESH_JOBS_ADDR"] == f"127.0.0.1:{p.jobs}"
        assert env["PIXMESH_PUBLIC_BASE_URL"] == f"http://127.0.0.1:{p.envoy}"
        assert env["OTEL_SERVICE_NAME"] == f"pixmesh-{name}"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{p.otlp}"
        assert env["OTEL_BSP_SCHEDULE_DELAY"] == "1000"


def test_overrides_apply_to_all_then_per_service_then_per_call(stack: Stack) -> None:
    assert stack.service_env("jobs")["PIXMESH_ACK_WAIT_S"] == "3"
    assert "PIXMESH_CONCURRENCY" not in stack.service_env("jobs")
    assert stack.service_env("imaging")["PIXMESH_CONCURRENCY"] == "4"
    extra = {"PIXMESH_CONCURRENCY": "1", "PIXMESH_ACK_WAIT_S": "2"}
    env = stack.service_env("imaging", extra)
    assert (env["PIXMESH_CONCURRENCY"], env["PIXMESH_ACK_WAIT_S"]) == ("1", "2")


def test_settings_parse_the_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack.service_env("imaging").items():
        monkeypatch.setenv(key, value)
    settings = WorkerSettings()
    assert settings.grpc_address == stack.service_addr("imaging")
    assert settings.nats_url == stack.nats_url
    assert settings.database_url == stack.database_url
    assert settings.redis_url == stack.redis_url
    assert settings.s3_endpoint == stack.s3_endpoint
    assert settings.s3_secret_key.get_secret_value() == stack.s3_secret_key
    assert settings.service_name == "imaging"
    assert settings.concurrency == 4
    assert settings.ack_wait_s == 3.0
