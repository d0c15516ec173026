"""The loopback ports of one local stack.

`Ports()` holds the fixed defaults of `make up`; they match services/runtime/settings.py and each
service's settings. `Ports.free()` asks the kernel for unused ports so a test session can run next
to a running `make up`.

The cluster mode (`make up-cluster`) adds two NATS nodes (client and monitor ports), every node's
route port, and a second replica's gRPC and metrics ports for each service (`<service>_2`,
`<service>_metrics_2`). A single-node stack does not use them and does not check them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Iterable, Iterator
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
    # Cluster mode: NATS nodes 2 and 3, each node's cluster (route) port.
    nats_2: int = 4223
    nats_3: int = 4224
    nats_monitor_2: int = 8223
    nats_monitor_3: int = 8224
    nats_cluster: int = 6222
    nats_cluster_2: int = 6223
    nats_cluster_3: int = 6224
    # Cluster mode: the second replica of each service (gRPC, then /metrics).
    gateway_2: int = 50061
    jobs_2: int = 50062
    imaging_2: int = 50063
    inference_2: int = 50064
    metadata_2: int = 50065
    gateway_metrics_2: int = 9111
    jobs_metrics_2: int = 9112
    imaging_metrics_2: int = 9113
    inference_metrics_2: int = 9114
    metadata_metrics_2: int = 9115

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

    def service(self, name: str, replica: int = 1) -> int:
        """The gRPC port of one of the five services (`replica` 1 or 2)."""
        port = getattr(self, name + _suffix(replica, MAX_REPLICAS), None)
        if name not in SERVICES or not isinstance(port, int):
            raise KeyError(f"unknown service {name!r}")
        return port

    def metrics(self, name: str, replica: int = 1) -> int:
        """The /metrics port of one of the five services (`replica` 1 or 2)."""
        self.service(name, replica)
        port: int = getattr(self, f"{name}_metrics{_suffix(replica, MAX_REPLICAS)}")
        return port

    def nats_client(self, node: int = 1) -> int:
        """The client port of NATS node 1, 2 or 3."""
        port: int = getattr(self, "nats" + _suffix(node, NATS_NODES))
        return port

    def nats_monitoring(self, node: int = 1) -> int:
        """The monitoring (HTTP) port of NATS node 1, 2 or 3."""
        port: int = getattr(self, "nats_monitor" + _suffix(node, NATS_NODES))
        return port

    def nats_route(self, node: int = 1) -> int:
        """The cluster (route) port of NATS node 1, 2 or 3."""
        port: int = getattr(self, "nats_cluster" + _suffix(node, NATS_NODES))
        return port

    def names(self, *, cluster: bool) -> list[str]:
        """The ports a single-node stack uses, or (`cluster`) every one."""
        return [n for n, _ in self.items() if cluster or n not in _CLUSTER_ONLY]

    def check_available(self, names: Iterable[str] | None = None) -> None:
        """Raise PortInUseError for the first port (of `names`, default all) something already
        listens on."""
        wanted = None if names is None else set(names)
        for name, port in self.items():
            if (wanted is None or name in wanted) and not is_port_free(port):
                raise PortInUseError(name, port)


# The five services, in start order: jobs before the gateway (it calls jobs), workers last.
SERVICES: tuple[str, ...] = ("jobs", "gateway", "imaging", "inference", "metadata")
# Ports exist for this many replicas of a service, and this many NATS nodes.
MAX_REPLICAS = 2
NATS_NODES = 3
_CLUSTER_ONLY = frozenset(
    [f"nats{s}" for s in ("_2", "_3")]
    + [f"nats_monitor{s}" for s in ("_2", "_3")]
    + [f"nats_cluster{s}" for s in ("", "_2", "_3")]
    + [f"{name}_2" for name in SERVICES]
    + [f"{name}_metrics_2" for name in SERVICES]
)


def _suffix(index: int, count: int) -> str:
    """Field-name suffix of replica/node `index` (1-based): "" for the first, "_2", ..."""
    if not 1 <= index <= count:
        raise KeyError(f"index {index} is outside 1..{count}")
    return "" if index == 1 else f"_{index}"


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
