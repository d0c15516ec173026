"""The loopback ports of one local stack.

`Ports()` holds the fixed defaults of `make up`; they match services/runtime/settings.py and each
service's settings. `Ports.free()` asks the kernel for unused ports so a test session can run next
to a running `make up`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterator
from dataclasses import dataclass

HOST = "127.0.0.1"


class PortInUseError(RuntimeError):
    def __init__(self, name: str, port: int) -> None:
        super().__init__(
            f"port {port} ({name}) is already in use on {HOST}: stop whatever listens there "
            f"(`ss -ltnp 'sport = :{port}'` shows it) or run `make down` if a stack is still up"
        )
        self.name = name
        self.port = port


@dataclass(frozen=True, slots=True)
class Ports:
    nats: int = 4222
    nats_monitor: int = 8222
    postgres: int = 5432
    valkey: int = 6379
    s3: int = 8333
    # SeaweedFS internals. Its defaults (9333, 8080, 8888, port+10000 for gRPC) would clash with
    # Envoy's 8080, so every one is pinned here.
    s3_grpc: int = 18333
    weed_master: int = 19333
    weed_master_grpc: int = 29333
    weed_volume: int = 18080
    weed_volume_grpc: int = 28080
    weed_filer: int = 18888
    weed_filer_grpc: int = 28888
    weed_admin: int = 23646
    weed_admin_grpc: int = 33646
    otlp: int = 4317
    envoy: int = 8080
    envoy_admin: int = 9901
    gateway: int = 50051
    jobs: int = 50052
    imaging: int = 50053
    inference: int = 50054
    metadata: int = 50055
    # Prometheus /metrics of each service (the services' own defaults).
    gateway_metrics: int = 9101
    jobs_metrics: int = 9102
    imaging_metrics: int = 9103
    inference_metrics: int = 9104
    metadata_metrics: int = 9105

    @classmethod
    def free(cls) -> Ports:
        """Distinct ports that were free a moment ago (all sockets are held until all are picked)."""
        names = [f.name for f in dataclasses.fields(cls)]
        with contextlib.ExitStack() as held:
            ports: dict[str, int] = {}
            for name in names:
                sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((HOST, 0))
                ports[name] = sock.getsockname()[1]
        return cls(**ports)

    def items(self) -> Iterator[tuple[str, int]]:
        for f in dataclasses.fields(self):
            yield f.name, getattr(self, f.name)

    def service(self, name: str) -> int:
        """The gRPC port of one of the five services."""
        port = getattr(self, name, None)
        if name not in SERVICES or not isinstance(port, int):
            raise KeyError(f"unknown service {name!r}")
        return port

    def metrics(self, name: str) -> int:
        """The /metrics port of one of the five services."""
        self.service(name)
        port: int = getattr(self, f"{name}_metrics")
        return port

    def check_available(self) -> None:
        """Raise PortInUseError for the first port something already listens on."""
        for name, port in self.items():
            if not is_port_free(port):
                raise PortInUseError(name, port)


# The five services, in start order: jobs before the gateway (it calls jobs), workers last.
SERVICES: tuple[str, ...] = ("jobs", "gateway", "imaging", "inference", "metadata")


def is_port_free(port: int, host: str = HOST) -> bool:
    # SO_REUSEADDR as the servers use it: TIME_WAIT leftovers of a stack that just stopped do not
    # count, a listening socket does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
