"""The five pixmesh services as processes: `python -m services.<name>` with a computed environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from deploy.local.ports import HOST, SERVICES, Ports
from deploy.local.process import ProcessSpec

# A service drains on SIGTERM (PIXMESH_DRAIN_TIMEOUT_S, 20 s by default); SIGKILL comes after this.
SERVICE_STOP_TIMEOUT_S = 30.0


def service_env(
    name: str,
    ports: Ports,
    *,
    database_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    s3_access_key: str,
    s3_secret_key: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The PIXMESH_*/OTEL_* variables one service gets (not the inherited environment)."""
    env = {
        "PIXMESH_SERVICE_NAME": name,
        "PIXMESH_GRPC_HOST": HOST,
        "PIXMESH_GRPC_PORT": str(ports.service(name)),
        "PIXMESH_METRICS_PORT": str(ports.metrics(name)),
        "PIXMESH_NATS_URL": f"nats://{HOST}:{ports.nats}",
        "PIXMESH_DATABASE_URL": database_url,
        "PIXMESH_REDIS_URL": f"redis://{HOST}:{ports.valkey}/0",
        "PIXMESH_S3_ENDPOINT": s3_endpoint,
        "PIXMESH_S3_BUCKET": s3_bucket,
        "PIXMESH_S3_ACCESS_KEY": s3_access_key,
        "PIXMESH_S3_SECRET_KEY": s3_secret_key,
        "PIXMESH_PUBLIC_BASE_URL": f"http://{HOST}:{ports.envoy}",
        # Webhooks to local receivers (http://127.0.0.1:...): a local stack only.
        "PIXMESH_WEBHOOK_ALLOW_PRIVATE": "true",
        "OTEL_SERVICE_NAME": f"pixmesh-{name}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{ports.otlp}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "1000",  # ms: a trace is readable a second after the request
        # The sink only speaks the trace service.
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    # Every service may reach any other (the gateway calls jobs: PIXMESH_JOBS_ADDR).
    for other in SERVICES:
        env[f"PIXMESH_{other.upper()}_ADDR"] = f"{HOST}:{ports.service(other)}"
    env.update(overrides or {})
    return env


def service_spec(name: str, env: Mapping[str, str], cwd: Path) -> ProcessSpec:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return ProcessSpec(
        name,
        [sys.executable, "-m", f"services.{name}"],
        env=full_env,
        cwd=cwd,
        stop_timeout=SERVICE_STOP_TIMEOUT_S,
    )
