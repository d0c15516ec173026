"""Readiness probes: each returns when the server answers and raises while it does not."""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc


class NotReadyError(Exception):
    pass


def http_ok(url: str) -> None:
    with urllib.request.urlopen(url, timeout=1) as response:  # raises HTTPError on >= 400
        if response.status != 200:
            raise NotReadyError(f"{url} answered {response.status}")


def grpc_serving(target: str, service: str = "") -> None:
    """grpc.health.v1 Check: the same readiness signal Envoy and Kubernetes use."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        raise NotReadyError(f"{target} health is {status}")


def postgres_accepting(pg_bin: Path, host: str, port: int) -> None:
    argv = [str(pg_bin / "pg_isready"), "-q", "-h", host, "-p", str(port), "-U", "postgres"]
    subprocess.run([*argv, "-t", "1"], check=True, timeout=5)


def redis_pong(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        if not client.ping():
            raise NotReadyError(f"{url} did not answer PING")
    finally:
        client.close()
