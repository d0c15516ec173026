"""The whole pixmesh mesh on loopback: real servers from PyPI wheels plus the five services.

    stack = Stack(Path(".pixmesh"))          # make up: fixed default ports
    stack = Stack(tmp, Ports.free(), durable=False)   # tests: free ports, throw-away data
    stack.start()                            # infra, Envoy, services; each waited until ready
    stack.kill_service("imaging")            # SIGKILL the process group (crash test)
    stack.start_service("imaging")           # back, waited until grpc.health says SERVING
    stack.stop()                             # reverse order, SIGTERM then SIGKILL

Layout under `root`: data/<server>/ (kept between runs), run/logs/<name>.log, run/stack.json (the
state file `down` reads), run/traces.jsonl (the OTLP sink's spans), run/envoy.json.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import psutil

from deploy.local import mesh, probes, servers
from deploy.local.ports import HOST, SERVICES, Ports
from deploy.local.process import ManagedProcess, ProcessSpec, StackError
from deploy.local.state import read_state, stop_from_state, write_state

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

INFRA_TIMEOUT_S = 30.0
SERVICE_TIMEOUT_S = 60.0  # first start applies migrations and may load models
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


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
    ) -> None:
        """`service_env` maps a service name, or "*" for all, to extra variables (tests pass small
        limits such as PIXMESH_ACK_WAIT_S). `durable=False` trades crash safety for speed."""
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services: {sorted(unknown)}")
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
        return f"nats://{HOST}:{self.ports.nats}"

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

    def service_addr(self, name: str) -> str:
        return f"{HOST}:{self.ports.service(name)}"

    def metrics_url(self, name: str) -> str:
        """Prometheus text of one service, e.g. http://127.0.0.1:9103/metrics."""
        return f"http://{HOST}:{self.ports.metrics(name)}/metrics"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def service_env(self, name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The PIXMESH_*/OTEL_* variables of one service, overrides applied."""
        overrides = {**self._service_env.get("*", {}), **self._service_env.get(name, {})}
        return mesh.service_env(
            name,
            self.ports,
            database_url=self.database_url,
            s3_endpoint=self.s3_endpoint,
            s3_bucket=self.s3_bucket,
            s3_access_key=self.s3_access_key,
            s3_secret_key=self.s3_secret_key,
            overrides={**overrides, **(extra or {})},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Infra, then Envoy (if enabled), then the services; everything ready on return."""
        with self._stop_on_failure():
            self.start_infra()
            if self.envoy:
                self.start_envoy()
            self.start_services(self.services)

    def start_infra(self) -> None:
        """NATS, Postgres, Valkey, SeaweedFS (S3) and the OTLP sink; role, database and bucket."""
        with self._stop_on_failure():
            self._claim_run_dir()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for folder in ("nats", "valkey", "seaweedfs"):
                (self.data_dir / folder).mkdir(parents=True, exist_ok=True)
            identities = self.run_dir / "s3-identities.json"
            identities.write_text(servers.s3_identities(self.s3_access_key, self.s3_secret_key))
            identities.chmod(0o600)
            started = time.monotonic()
            # Launch everything first and wait afterwards: the servers boot in parallel, and
            # initdb (the slowest step, first run only) overlaps with the others' start.
            self._launch(servers.nats_spec(self.ports, self.data_dir / "nats"))
            self._launch(servers.valkey_spec(self.ports, self.data_dir / "valkey"))
            self._launch(
                servers.seaweedfs_spec(self.ports, self.data_dir / "seaweedfs", identities)
            )
            self._launch(servers.otlp_sink_spec(self.ports, self.trace_file))
            pg_data = self.data_dir / "postgres"
            pg_user = servers.prepare_postgres(pg_data)
            self._launch(servers.postgres_spec(self.ports, pg_data, pg_user, durable=self.durable))
            monitor = f"http://{HOST}:{self.ports.nats_monitor}/healthz"
            self._await("nats", started, lambda: probes.http_ok(monitor))
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
                gateway_port=self.ports.gateway,
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
        launched = {name: time.monotonic() for name in names if self._launch_service(name, env)}
        for name, started in launched.items():
            self._await(name, started, self._health_probe(name), self.service_timeout_s)

    def start_service(
        self, name: str, env: Mapping[str, str] | None = None, *, wait: bool = True
    ) -> None:
        """(Re)start one service; `env` adds variables for this run only."""
        started = time.monotonic()
        if self._launch_service(name, env) and wait:
            self.wait_healthy(name)
            self.timings[name] = time.monotonic() - started

    def wait_healthy(self, name: str, timeout: float | None = None) -> None:
        """Block until grpc.health.v1 Check("") on the service says SERVING."""
        proc = self._proc(name)
        timeout = self.service_timeout_s if timeout is None else timeout
        proc.wait_ready(self._health_probe(name), timeout, what="SERVING")

    def kill_service(
        self, name: str, sig: int = signal.SIGKILL, *, wait: bool = True, timeout: float = 30.0
    ) -> int | None:
        """Send `sig` to the service's process group; with `wait`, return its exit status."""
        proc = self._proc(name)
        proc.send_signal(sig)
        if not wait:
            return None
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{name} still running {timeout:.0f}s after signal {sig}") from exc
        self._save_state()
        return status

    def stop_service(self, name: str, timeout: float | None = None) -> int | None:
        """Graceful stop: SIGTERM (the service drains), SIGKILL after `timeout`."""
        status = self._proc(name).stop(timeout)
        self._save_state()
        return status

    def restart_service(self, name: str, env: Mapping[str, str] | None = None) -> None:
        if self.is_running(name):
            self.stop_service(name)
        self.start_service(name, env)

    def is_running(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.alive

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.alive}

    def exited(self) -> dict[str, int | None]:
        """Processes this stack started that are no longer running, with their exit status."""
        return {name: p.returncode for name, p in self._procs.items() if not p.alive}

    def stop(self) -> None:
        """Stop everything this Stack started: services, then Envoy, then the servers they use.
        Within each tier all get the signal at once and drain in parallel. Idempotent."""
        names = list(reversed(self._procs))
        tiers = [
            [n for n in names if n in SERVICES],
            [n for n in names if n == "envoy"],
            [n for n in names if n not in SERVICES and n != "envoy"],
        ]
        for tier in tiers:
            for name in tier:
                self._procs[name].request_stop()
            for name in tier:
                self._procs[name].stop()
            self._save_state()
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

    def create_api_key(self, tenant: str = "dev") -> str:
        """Run the gateway's admin CLI against this stack; returns the new key (its last line)."""
        argv = [sys.executable, "-m", "services.gateway.admin", "create-key", "--tenant", tenant]
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

    def _launch_service(self, name: str, env: Mapping[str, str] | None) -> bool:
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
        if self.is_running(name):
            return False
        self._launch(mesh.service_spec(name, self.service_env(name, env), servers.REPO_ROOT))
        return True

    def _health_probe(self, name: str) -> Callable[[], None]:
        addr = self.service_addr(name)
        return lambda: probes.grpc_serving(addr)

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
