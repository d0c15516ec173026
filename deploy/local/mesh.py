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
    replica: int = 1,
    replicas: Mapping[str, int] | None = None,
    nats_nodes: int = 1,
    database_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    s3_access_key: str,
    s3_secret_key: str,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The PIXMESH_*/OTEL_* variables one replica of a service gets (not the inherited
    environment). `replicas` (service -> count, default 1 each) lists every replica of a sibling
    in its PIXMESH_<NAME>_ADDR; with `nats_nodes` > 1 the NATS URL lists every node and streams
    are replicated on all of them."""
    counts = {other: (replicas or {}).get(other, 1) for other in SERVICES}
    env = {
        "PIXMESH_SERVICE_NAME": name,
        "PIXMESH_GRPC_HOST": HOST,
        "PIXMESH_GRPC_PORT": str(ports.service(name, replica)),
        "PIXMESH_METRICS_PORT": str(ports.metrics(name, replica)),
        "PIXMESH_NATS_URL": ",".join(
            f"nats://{HOST}:{ports.nats_client(node)}" for node in range(1, nats_nodes + 1)
        ),
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
    if nats_nodes > 1:
        env["PIXMESH_STREAM_REPLICAS"] = str(nats_nodes)
    # Every service may reach any other (the gateway calls jobs: PIXMESH_JOBS_ADDR), over all its
    # replicas (the runtime's channels balance round robin over a comma-separated list).
    for other in SERVICES:
        env[f"PIXMESH_{other.upper()}_ADDR"] = ",".join(
            f"{HOST}:{ports.service(other, i)}" for i in range(1, counts[other] + 1)
        )
    env.update(overrides or {})
    return env


def service_spec(
    name: str, env: Mapping[str, str], cwd: Path, process_name: str | None = None
) -> ProcessSpec:
    """`python -m services.<name>`; `process_name` tells replicas apart ("imaging-2")."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return ProcessSpec(
        process_name or name,
        [sys.executable, "-m", f"services.{name}"],
        env=full_env,
        cwd=cwd,
        stop_timeout=SERVICE_STOP_TIMEOUT_S,
    )
