"""Readiness probes: each returns when the server answers and raises while it does not."""

from __future__ import annotations

import json
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


def nats_cluster_ready(monitor_urls: list[str]) -> None:
    """Every node answers /healthz (JetStream included) and names the same JetStream meta leader,
    and the leader sees every other peer current: only then can an R3 stream be placed."""
    metas = []
    for url in monitor_urls:
        http_ok(f"{url}/healthz")
        with urllib.request.urlopen(f"{url}/jsz", timeout=1) as response:
            metas.append(json.load(response).get("meta_cluster") or {})
    leaders = {meta.get("leader") for meta in metas}
    if len(leaders) != 1 or not all(leaders):
        raise NotReadyError(f"no agreed JetStream meta leader yet: {sorted(map(str, leaders))}")
    (leader,) = leaders
    # Each node lists the peers other than itself; only the leader knows whether they are current.
    for meta in metas:
        peers = meta.get("replicas") or []
        if all(p.get("name") != leader for p in peers):
            if len(peers) + 1 == len(monitor_urls) and all(p.get("current") for p in peers):
                return
            raise NotReadyError(f"meta leader {leader} sees peers {peers}")
    raise NotReadyError(f"meta leader {leader} is not one of {monitor_urls}")


def envoy_hosts_healthy(admin_url: str, cluster: str, count: int) -> None:
    """Envoy's active health checks pass on `count` hosts of `cluster` (admin /clusters)."""
    with urllib.request.urlopen(f"{admin_url}/clusters", timeout=1) as response:
        text = response.read().decode()
    healthy = [
        line
        for line in text.splitlines()
        if line.startswith(f"{cluster}::") and line.endswith("::health_flags::healthy")
    ]
    if len(healthy) < count:
        raise NotReadyError(f"envoy: {len(healthy)} of {count} {cluster} hosts healthy")
