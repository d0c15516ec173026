"""The whole pixmesh mesh on loopback: real servers from PyPI wheels plus the five services.

    stack = Stack(Path(".pixmesh"))          # make up: fixed default ports
    stack = Stack(tmp, Ports.free(), durable=False)   # tests: free ports, throw-away data
    stack.start()                            # infra, Envoy, services; each waited until ready
    stack.kill_service("imaging")            # SIGKILL the process group (crash test)
    stack.start_service("imaging")           # back, waited until grpc.health says SERVING
    stack.stop()                             # reverse order, SIGTERM then SIGKILL

    stack = Stack(root, cluster=True)        # make up-cluster: 3 NATS nodes (R3 streams), two
                                             # replicas of each service but inference, Envoy over
                                             # both gateways
    stack.kill_service("imaging-2")          # one replica ("imaging" alone: every replica)
    stack.kill_nats(2); stack.start_nats(2)  # one NATS node, back and caught up

A service with one replica runs as a process named like the service ("inference"); with several,
as "<service>-<n>" ("imaging-1", "imaging-2"), each with its own gRPC and metrics ports.

Layout under `root`: data/<server>/ (kept between runs), run/logs/<name>.log, run/stack.json (the
state file `down` reads), run/traces.jsonl (the OTLP sink's spans), run/envoy.json.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import psutil

from deploy.local import mesh, probes, servers
from deploy.local.ports import HOST, MAX_REPLICAS, NATS_NODES, SERVICES, Ports
from deploy.local.process import ManagedProcess, ProcessSpec, StackError
from deploy.local.state import read_state, stop_from_state, write_state

if TYPE_CHECKING:
    import grpc
    from mypy_boto3_s3 import S3Client

INFRA_TIMEOUT_S = 30.0
SERVICE_TIMEOUT_S = 60.0  # first start applies migrations and may load models
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# The cluster mode's replicas: two of each service; one inference (a model per process is
# memory-heavy, and its queue is shared anyway).
CLUSTER_REPLICAS: Mapping[str, int] = {
    "jobs": 2,
    "gateway": 2,
    "imaging": 2,
    "inference": 1,
    "metadata": 2,
}


@dataclass(frozen=True, slots=True)
class Replica:
    service: str
    index: int  # 1-based
    name: str  # the process name: the service's own with one replica, else "<service>-<index>"


class Stack:
    def __init__(
        self,
        root: Path,
        ports: Ports | None = None,
        *,
        envoy: bool = True,
        services: Sequence[str] = SERVICES,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        durable: bool = True,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        service_timeout_s: float = SERVICE_TIMEOUT_S,
        cluster: bool = False,
        replicas: Mapping[str, int] | None = None,
    ) -> None:
        """`service_env` maps a service name, or "*" for all, to extra variables (tests pass small
        limits such as PIXMESH_ACK_WAIT_S). `durable=False` trades crash safety for speed.
        `cluster` runs a 3-node NATS cluster (streams R3) and CLUSTER_REPLICAS of the services;
        `replicas` (service -> 1..2) overrides the count of any service in either mode."""
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services: {sorted(unknown)}")
        counts = {name: CLUSTER_REPLICAS[name] if cluster else 1 for name in SERVICES}
        for name, count in (replicas or {}).items():
            if name not in SERVICES or not 1 <= count <= MAX_REPLICAS:
                raise ValueError(f"replicas: {name}={count} (services, 1..{MAX_REPLICAS} each)")
            counts[name] = count
        self.cluster = cluster
        self.nats_nodes = NATS_NODES if cluster else 1
        self.replica_counts: dict[str, int] = counts
        self.root = root.resolve()
        self.ports = ports or Ports()
        self.envoy = envoy
        self.services = tuple(services)
        self.durable = durable
        self.max_request_bytes = max_request_bytes
        self.service_timeout_s = service_timeout_s
        self.data_dir = self.root / "data"
        self.run_dir = self.root / "run"
        self.log_dir = self.run_dir / "logs"
        self.state_file = self.run_dir / "stack.json"
        self.trace_file = self.run_dir / "traces.jsonl"
        self.timings: dict[str, float] = {}  # seconds from launch to ready, per server
        self._service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self._procs: dict[str, ManagedProcess] = {}  # start order
        self._atexit = False
        self._wrote_state = False  # never delete a state file another stack wrote

    # -- addresses ---------------------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        """The client URL; in the cluster mode every node's, comma separated (nats-py's form)."""
        return ",".join(self.nats_node_url(n) for n in range(1, self.nats_nodes + 1))

    def nats_node_url(self, node: int = 1) -> str:
        return f"nats://{HOST}:{self.ports.nats_client(node)}"

    def nats_monitor_url(self, node: int = 1) -> str:
        """A node's monitoring endpoint (/healthz, /jsz, /varz)."""
        return f"http://{HOST}:{self.ports.nats_monitoring(node)}"

    def nats_process(self, node: int = 1) -> str:
        """The process name of a NATS node: "nats" alone, "nats-1".."nats-3" in a cluster."""
        if not 1 <= node <= self.nats_nodes:
            raise StackError(f"NATS node {node}: this stack has {self.nats_nodes}")
        return servers.nats_process_name(node) if self.cluster else "nats"

    @property
    def database_url(self) -> str:
        return servers.database_url(self.ports)

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.ports.valkey}/0"

    @property
    def s3_endpoint(self) -> str:
        return servers.s3_endpoint(self.ports)

    s3_bucket = servers.S3_BUCKET
    s3_access_key = servers.S3_ACCESS_KEY
    s3_secret_key = servers.S3_SECRET_KEY

    @property
    def otlp_endpoint(self) -> str:
        return f"http://{HOST}:{self.ports.otlp}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.ports.envoy}"

    @property
    def grpc_target(self) -> str:
        """Public gRPC entry (through Envoy), for the SDK and grpcurl."""
        return f"{HOST}:{self.ports.envoy}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://{HOST}:{self.ports.envoy_admin}"

    def replicas(self, name: str) -> list[Replica]:
        """The replicas a name stands for: every one of a service, or the one named
        ("imaging-2"). Whether running or not."""
        if name in SERVICES:
            count = self.replica_counts[name]
            return [
                Replica(name, i, name if count == 1 else f"{name}-{i}") for i in range(1, count + 1)
            ]
        service, _, index = name.rpartition("-")
        if service in SERVICES and index.isdigit():
            for replica in self.replicas(service):
                if replica.name == name:
                    return [replica]
        raise StackError(f"unknown service or replica {name!r}")

    def service_addr(self, name: str) -> str:
        """host:port of a replica; of a service, every replica's, comma separated (what the
        runtime's channels and PIXMESH_<NAME>_ADDR take)."""
        return ",".join(
            f"{HOST}:{self.ports.service(r.service, r.index)}" for r in self.replicas(name)
        )

    def metrics_url(self, name: str) -> str:
        """Prometheus text of a service (with one replica) or of one replica ("imaging-2"), e.g.
        http://127.0.0.1:9103/metrics."""
        found = self.replicas(name)
        if len(found) != 1:
            raise StackError(
                f"{name} has {len(found)} replicas: ask for one of "
                f"{', '.join(r.name for r in found)} (or use metrics_urls)"
            )
        (replica,) = found
        return f"http://{HOST}:{self.ports.metrics(replica.service, replica.index)}/metrics"

    def metrics_urls(self, name: str) -> dict[str, str]:
        """Replica name -> its /metrics URL, for every replica of a service."""
        return {r.name: self.metrics_url(r.name) for r in self.replicas(name)}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def service_env(self, name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The PIXMESH_*/OTEL_* variables of a replica ("imaging-2"), or of a service's first,
        overrides applied (those of the service, "*", then `extra`)."""
        replica = self.replicas(name)[0]
        service = replica.service
        overrides = {**self._service_env.get("*", {}), **self._service_env.get(service, {})}
        return mesh.service_env(
            service,
            self.ports,
            replica=replica.index,
            replicas=self.replica_counts,
            nats_nodes=self.nats_nodes,
            database_url=self.database_url,
            s3_endpoint=self.s3_endpoint,
            s3_bucket=self.s3_bucket,
            s3_access_key=self.s3_access_key,
            s3_secret_key=self.s3_secret_key,
            overrides={
                "PIXMESH_SERVICE_TOKEN_SECRET": self.service_token_secret(),
                # Seals webhook secrets in Postgres (services/runtime/secrets.py).
                "PIXMESH_SECRETS_KEYS": json.dumps(
                    [
                        self._kept_secret(
                            "secrets-key", lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
                        )
                    ]
                ),
                **overrides,
                **(extra or {}),
            },
        )

    def service_channel(self, name: str, caller: str = "local") -> grpc.aio.Channel:
        """An asyncio channel to a service (its first replica's address when it has several),
        whose calls carry a service token signed as `caller`, as the services' own calls to
        each other do (services/runtime/trust.py): for tests and benches that call internal
        APIs (DeleteJobs, DeleteImageMetadata) directly."""
        import grpc

        from services.runtime import trust

        minter = trust.Minter(self.service_token_secret(), caller)
        return grpc.aio.insecure_channel(
            self.service_addr(name).split(",")[0], interceptors=trust.client_interceptors(minter)
        )

    def service_token_secret(self) -> str:
        """The key the services sign their calls to each other with (services/runtime/trust.py):
        random, made on first use and kept in the data folder (0600), so every process of this
        stack, and a later `up` on the same data, share it."""
        return self._kept_secret("service-token-secret", lambda: secrets.token_urlsafe(32))

    def _kept_secret(self, name: str, make: Callable[[], str]) -> str:
        path = self.data_dir / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(make())
            path.chmod(0o600)
        return path.read_text().strip()

    def service_token(self, admin: bool = False) -> str:
        """A service token for tests and tools calling an internal service directly (header
        `x-pixmesh-service-token`); `admin` may manage models."""
        from services.runtime.trust import Minter

        return Minter(self.service_token_secret(), "operator", admin).token()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Infra, then Envoy (if enabled), then the services; everything ready on return."""
        with self._stop_on_failure():
            self.start_infra()
            if self.envoy:
                self.start_envoy()
            self.start_services(self.services)
            gateways = len(self.replicas("gateway"))
            if self.envoy and gateways > 1 and "gateway" in self.services:
                # Envoy routes to a replica once its gRPC health check passed (1 s interval).
                admin = self.envoy_admin_url
                self._proc("envoy").wait_ready(
                    lambda: probes.envoy_hosts_healthy(admin, "gateway", gateways),
                    INFRA_TIMEOUT_S,
                    what="routing to every gateway",
                )

    def start_infra(self) -> None:
        """NATS, Postgres, Valkey, SeaweedFS (S3) and the OTLP sink; role, database and bucket."""
        with self._stop_on_failure():
            self._claim_run_dir()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for folder in (*self._nats_dirs(), "valkey", "seaweedfs"):
                (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
            identities = self.run_dir / "s3-identities.json"
            identities.write_text(servers.s3_identities(self.s3_access_key, self.s3_secret_key))
            identities.chmod(0o600)
            started = time.monotonic()
            # Launch everything first and wait afterwards: the servers boot in parallel, and
            # initdb (the slowest step, first run only) overlaps with the others' start.
            for node in range(1, self.nats_nodes + 1):
                self._launch(self._nats_spec(node))
            self._launch(servers.valkey_spec(self.ports, self.data_dir / "valkey"))
            self._launch(
                servers.seaweedfs_spec(
                    self.ports, self.data_dir / "seaweedfs", identities, run_dir=self.run_dir
                )
            )
            self._launch(servers.otlp_sink_spec(self.ports, self.trace_file))
            pg_data = self.data_dir / "postgres"
            pg_user = servers.prepare_postgres(pg_data)
            self._launch(servers.postgres_spec(self.ports, pg_data, pg_user, durable=self.durable))
            self._await_nats(started)
            self._await(
                "postgres",
                started,
                lambda: probes.postgres_accepting(servers.PG_BIN, HOST, self.ports.postgres),
            )
            servers.bootstrap_postgres(self.ports.postgres)
            self._await("valkey", started, lambda: probes.redis_pong(self.redis_url))
            s3 = self.s3_client()
            self._await("seaweedfs", started, lambda: servers.ensure_bucket(s3, self.s3_bucket))
            otlp = f"{HOST}:{self.ports.otlp}"
            self._await("otlp-sink", started, lambda: probes.grpc_serving(otlp))
            self.timings["infra"] = time.monotonic() - started

    def start_envoy(self) -> None:
        """Envoy in front of the gateway: REST/JSON transcoding and gRPC on one port."""
        # Imported here: it loads the generated protos, which `down` and infra-only runs skip.
        from deploy.envoy.config import DEFAULT_DESCRIPTOR, render_config

        config = self.run_dir / "envoy.json"
        config.write_text(
            render_config(
                listen_port=self.ports.envoy,
                admin_port=self.ports.envoy_admin,
                gateway_ports=[
                    self.ports.service("gateway", r.index) for r in self.replicas("gateway")
                ],
                descriptor_path=DEFAULT_DESCRIPTOR,
                otlp_port=self.ports.otlp,
                max_request_bytes=self.max_request_bytes,
            )
        )
        with self._stop_on_failure():
            started = time.monotonic()
            self._launch(servers.envoy_spec(config))
            self._await("envoy", started, lambda: probes.http_ok(f"{self.envoy_admin_url}/ready"))

    def start_services(
        self, names: Iterable[str] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        """Launch the services together (imports overlap), then wait for each to be SERVING."""
        names = list(self.services if names is None else names)
        replicas = [r for name in names for r in self.replicas(name)]
        for wave in self._start_waves(replicas):
            launched = {r: time.monotonic() for r in wave if self._launch_service(r, env)}
            for replica, started in launched.items():
                self._await(
                    replica.name, started, self._health_probe(replica), self.service_timeout_s
                )

    def start_service(
        self, name: str, env: Mapping[str, str] | None = None, *, wait: bool = True
    ) -> None:
        """(Re)start a service (every replica not running) or one replica ("imaging-2"); `env`
        adds variables for this run only."""
        started = time.monotonic()
        launched = [r for r in self.replicas(name) if self._launch_service(r, env)]
        if launched and wait:
            for replica in launched:
                self.wait_healthy(replica.name)
            self.timings[name] = time.monotonic() - started

    def wait_healthy(self, name: str, timeout: float | None = None) -> None:
        """Block until grpc.health.v1 Check("") says SERVING on the replica (every replica of a
        service)."""
        timeout = self.service_timeout_s if timeout is None else timeout
        for replica in self.replicas(name):
            self._proc(replica.name).wait_ready(
                self._health_probe(replica), timeout, what="SERVING"
            )

    def kill_service(
        self, name: str, sig: int = signal.SIGKILL, *, wait: bool = True, timeout: float = 30.0
    ) -> int | None:
        """Send `sig` to the process group of a replica (of every replica of a service); with
        `wait`, return its exit status (the last one's)."""
        return self._kill([r.name for r in self.replicas(name)], sig, wait, timeout)

    def stop_service(self, name: str, timeout: float | None = None) -> int | None:
        """Graceful stop of a replica or of every replica of a service: SIGTERM (it drains),
        SIGKILL after `timeout`. Replicas drain side by side; returns the last status."""
        procs = [self._proc(r.name) for r in self.replicas(name)]
        for proc in procs:
            proc.request_stop(timeout)
        status = None
        for proc in procs:
            status = proc.stop(timeout)
        self._save_state()
        return status

    def kill_nats(
        self, node: int = 1, sig: int = signal.SIGKILL, *, wait: bool = True, timeout: float = 30.0
    ) -> int | None:
        """Send `sig` to one NATS node (the only one of a single-node stack)."""
        return self._kill([self.nats_process(node)], sig, wait, timeout)

    def start_nats(self, node: int = 1) -> None:
        """Start a NATS node again on its data folder; returns once it serves and (cluster) the
        JetStream meta group has every peer current again."""
        name = self.nats_process(node)
        if self.is_running(name):
            return
        started = time.monotonic()
        self._launch(self._nats_spec(node))
        self._await_nats(started, nodes=[node])

    def stop_postgres(self, timeout: float = 15.0) -> int | None:
        """Stop Postgres (fast shutdown: clients see their connections end, new ones refused),
        for outage tests; `start_postgres` brings it back on the same data."""
        status = self._proc("postgres").stop(timeout)
        self._save_state()
        return status

    def start_postgres(self) -> None:
        if self.is_running("postgres"):
            return
        started = time.monotonic()
        pg_data = self.data_dir / "postgres"
        pg_user = servers.prepare_postgres(pg_data)
        self._launch(servers.postgres_spec(self.ports, pg_data, pg_user, durable=self.durable))
        self._await(
            "postgres",
            started,
            lambda: probes.postgres_accepting(servers.PG_BIN, HOST, self.ports.postgres),
        )

    def restart_service(self, name: str, env: Mapping[str, str] | None = None) -> None:
        if self.is_running(name):
            self.stop_service(name)
        self.start_service(name, env)

    def revive(self, name: str) -> bool:
        """Start again a service replica or NATS node that is not running (what a supervisor
        does after a crash); False for other processes, which are not restarted."""
        nodes = {self.nats_process(n): n for n in range(1, self.nats_nodes + 1)}
        if name in nodes:
            self.start_nats(nodes[name])
            return True
        try:
            self.replicas(name)
        except StackError:
            return False
        self.start_service(name)
        return True

    def is_running(self, name: str) -> bool:
        """A process by name ("nats-2", "imaging-1", "envoy"); a service: all its replicas."""
        names = [r.name for r in self.replicas(name)] if name in SERVICES else [name]
        procs = [self._procs.get(n) for n in names]
        return all(proc is not None and proc.alive for proc in procs)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.alive}

    def exited(self) -> dict[str, int | None]:
        """Processes this stack started that are no longer running, with their exit status."""
        return {name: p.returncode for name, p in self._procs.items() if not p.alive}

    def stop(self) -> None:
        """Stop everything this Stack started: services, then Envoy, then the servers they use.
        Within each tier all get the signal at once and drain in parallel. Idempotent."""
        names = list(reversed(self._procs))
        services = {r.name for s in SERVICES for r in self.replicas(s)}
        tiers = [
            [n for n in names if n in services],
            [n for n in names if n == "envoy"],
            [n for n in names if n not in services and n != "envoy"],
        ]
        for tier in tiers:
            for name in tier:
                self._procs[name].request_stop()
            for name in tier:
                self._procs[name].stop()
            self._save_state()
        if "seaweedfs" in names:
            servers.remove_weed_grpc_sockets(self.ports)  # left in /tmp if it had to be killed
        self._procs.clear()
        if self._wrote_state:
            self.state_file.unlink(missing_ok=True)
            self._wrote_state = False
        if self._atexit:
            atexit.unregister(self.stop)
            self._atexit = False

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers for callers -----------------------------------------------------------------

    def create_api_key(self, tenant: str = "dev", scopes: str = "read,write") -> str:
        """Run the gateway's admin CLI against this stack; returns the new key (its last line).
        `scopes`: comma-separated read, write, admin."""
        argv = [sys.executable, "-m", "services.gateway.admin", "create-key", "--tenant", tenant]
        argv += ["--scopes", scopes]
        result = subprocess.run(
            argv,
            env={**os.environ, **self.service_env("gateway")},
            cwd=servers.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise StackError(
                f"`{' '.join(argv[1:])}` failed ({result.returncode}):\n{result.stderr[-2000:]}"
            )
        return lines[-1].strip()

    def gateway_admin(self, *args: str) -> str:
        """Run `python -m services.gateway.admin ARGS` against this stack; returns stdout."""
        argv = [sys.executable, "-m", "services.gateway.admin", *args]
        result = subprocess.run(
            argv,
            env={**os.environ, **self.service_env("gateway")},
            cwd=servers.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(args)}` failed ({result.returncode}):\n{result.stderr[-2000:]}"
            )
        return result.stdout

    def s3_client(self) -> S3Client:
        return servers.s3_client(self.s3_endpoint, self.s3_access_key, self.s3_secret_key)

    # -- internals ---------------------------------------------------------------------------

    def _proc(self, name: str) -> ManagedProcess:
        try:
            return self._procs[name]
        except KeyError:
            raise StackError(f"{name} was not started by this stack") from None

    def _launch(self, spec: ProcessSpec) -> ManagedProcess:
        if not self._atexit:
            # Python exit (an exception in a test session, Ctrl-C) must not leave orphans.
            atexit.register(self.stop)
            self._atexit = True
        proc = ManagedProcess(spec, self.log_path(spec.name))
        # Re-insert so the dict stays in start order: reverse stop order follows dependencies.
        self._procs.pop(spec.name, None)
        self._procs[spec.name] = proc
        proc.start()
        self._save_state()
        return proc

    def _start_waves(self, replicas: Sequence[Replica]) -> list[list[Replica]]:
        """One wave on a single NATS server. On a fresh cluster, services that create the same
        R3 stream at the same moment can see JetStream API requests time out while the stream's
        Raft group forms, so: the first jobs replica alone (it creates the streams), then every
        other service's first replica (one creator per durable consumer), then the rest."""
        if not self.cluster:
            return [list(replicas)]
        first = [r for r in replicas if r.service == "jobs" and r.index == 1]
        waves = [
            first,
            [r for r in replicas if r.index == 1 and r not in first],
            [r for r in replicas if r.index > 1],
        ]
        return [wave for wave in waves if wave]

    def _launch_service(self, replica: Replica, env: Mapping[str, str] | None) -> bool:
        if self.is_running(replica.name):
            return False
        self._launch(
            mesh.service_spec(
                replica.service,
                self.service_env(replica.name, env),
                servers.REPO_ROOT,
                process_name=replica.name,
            )
        )
        return True

    def _health_probe(self, replica: Replica) -> Callable[[], None]:
        addr = self.service_addr(replica.name)
        return lambda: probes.grpc_serving(addr)

    def _kill(self, names: Sequence[str], sig: int, wait: bool, timeout: float) -> int | None:
        procs = [self._proc(name) for name in names]
        for proc in procs:
            proc.send_signal(sig)
        if not wait:
            return None
        status = None
        for proc in procs:
            try:
                status = proc.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                raise StackError(
                    f"{proc.name} still running {timeout:.0f}s after signal {sig}"
                ) from exc
        self._save_state()
        return status

    def _nats_dirs(self) -> list[str]:
        if not self.cluster:
            return ["nats"]
        return [servers.nats_process_name(n) for n in range(1, self.nats_nodes + 1)]

    def _nats_spec(self, node: int) -> ProcessSpec:
        folder = self.data_dir / self._nats_dirs()[node - 1]
        return servers.nats_spec(self.ports, folder, node if self.cluster else None)

    def _await_nats(self, started: float, nodes: Sequence[int] | None = None) -> None:
        """Each (given) node answers /healthz; in a cluster, then the JetStream meta group has a
        leader and every peer current (R3 streams need all three)."""
        all_nodes = range(1, self.nats_nodes + 1)
        for node in all_nodes if nodes is None else nodes:
            monitor = f"{self.nats_monitor_url(node)}/healthz"
            self._await(
                self.nats_process(node), started, functools.partial(probes.http_ok, monitor)
            )
        if self.cluster:
            monitors = [self.nats_monitor_url(n) for n in all_nodes]
            self._await(
                self.nats_process((nodes or [1])[0]),
                started,
                lambda: probes.nats_cluster_ready(monitors),
            )

    def _await(
        self,
        name: str,
        started: float,
        probe: Callable[[], object],
        timeout: float = INFRA_TIMEOUT_S,
    ) -> None:
        self._proc(name).wait_ready(probe, timeout)
        self.timings[name] = time.monotonic() - started

    def _save_state(self) -> None:
        records = []
        for proc in self._procs.values():
            with contextlib.suppress(psutil.NoSuchProcess):  # it may die while we look
                if proc.alive:
                    records.append(proc.record())
        write_state(self.state_file, dict(self.ports.items()), records)
        self._wrote_state = True

    def _claim_run_dir(self) -> None:
        """Refuse a run dir another live stack owns; clean up after one that died."""
        state = read_state(self.state_file)
        if state is None or state.owner_pid == os.getpid():
            return
        if state.owner_alive():
            raise StackError(
                f"a stack started by pid {state.owner_pid} is running from {self.root}: "
                "stop it first (`make down` / `python -m deploy.local down`)"
            )
        stop_from_state(self.state_file)  # orphans of an `up` that was SIGKILLed

    @contextlib.contextmanager
    def _stop_on_failure(self) -> Iterator[None]:
        # A half-started stack is useless and holds ports: tear it down before re-raising.
        try:
            yield
        except BaseException:
            self.stop()
            raise
