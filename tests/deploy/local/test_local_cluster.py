"""The cluster mode's ports, process specs, replica naming and environment (nothing started but
stand-in services and, in the integration test, the three NATS nodes alone)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext

from deploy.local import Ports, Stack, StackError, mesh, servers
from deploy.local.__main__ import _endpoints as endpoints
from deploy.local.ports import MAX_REPLICAS, NATS_NODES, SERVICES
from deploy.local.process import ProcessSpec
from deploy.local.stack import CLUSTER_REPLICAS
from deploy.local.state import kill_from_state
from services.runtime.settings import ServiceSettings, WorkerSettings

FAKE = Path(__file__).with_name("fake_service.py")


def test_cluster_ports_are_distinct_and_single_node_ignores_them() -> None:
    for ports in (Ports(), Ports.free()):
        values = [port for _, port in ports.items()]
        assert len(set(values)) == len(values)
        nodes = [ports.nats_client(n) for n in range(1, NATS_NODES + 1)]
        monitors = [ports.nats_monitoring(n) for n in range(1, NATS_NODES + 1)]
        routes = [ports.nats_route(n) for n in range(1, NATS_NODES + 1)]
        assert nodes[0] == ports.nats and monitors[0] == ports.nats_monitor
        assert len({*nodes, *monitors, *routes}) == 3 * NATS_NODES
        for name in SERVICES:
            assert ports.service(name, 1) == ports.service(name)
            assert ports.metrics(name, 1) == ports.metrics(name)
            assert ports.service(name, 2) not in (ports.service(name), ports.metrics(name, 2))
    single = set(Ports().names(cluster=False))
    everything = set(Ports().names(cluster=True))
    assert single < everything
    assert {"nats_2", "nats_cluster", "imaging_2", "imaging_metrics_2"} <= everything - single
    assert {"nats", "nats_monitor", "imaging", "imaging_metrics"} <= single
    with pytest.raises(KeyError):
        Ports().service("imaging", MAX_REPLICAS + 1)
    with pytest.raises(KeyError):
        Ports().nats_client(NATS_NODES + 1)


def test_single_node_port_check_skips_cluster_ports() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        ports = dataclasses.replace(Ports.free(), imaging_2=busy)
        ports.check_available(ports.names(cluster=False))
        with pytest.raises(Exception, match="imaging_2"):
            ports.check_available(ports.names(cluster=True))


def test_each_nats_node_has_its_ports_name_dir_and_routes_to_the_others(tmp_path: Path) -> None:
    ports = Ports.free()
    names = set()
    for node in range(1, NATS_NODES + 1):
        spec = servers.nats_spec(ports, tmp_path / f"n{node}", node)
        argv = list(spec.argv)

        def flag(name: str, argv: list[str] = argv) -> str:
            return argv[argv.index(name) + 1]

        assert spec.name == f"nats-{node}"
        assert "-js" in argv and flag("-sd") == str(tmp_path / f"n{node}")
        assert flag("-p") == str(ports.nats_client(node))
        assert flag("-m") == str(ports.nats_monitoring(node))
        assert flag("--cluster") == f"nats://127.0.0.1:{ports.nats_route(node)}"
        assert flag("--cluster_name") == servers.NATS_CLUSTER_NAME
        others = {ports.nats_route(n) for n in range(1, NATS_NODES + 1) if n != node}
        assert {int(u.rsplit(":", 1)[1]) for u in flag("--routes").split(",")} == others
        names.add(flag("--name"))
    assert len(names) == NATS_NODES  # JetStream clustering needs unique server names
    single = list(servers.nats_spec(ports, tmp_path).argv)
    assert "--cluster" not in single and "--routes" not in single


def test_replica_names_and_addresses(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports.free(), cluster=True)
    p = stack.ports
    assert [r.name for r in stack.replicas("imaging")] == ["imaging-1", "imaging-2"]
    assert [r.name for r in stack.replicas("inference")] == ["inference"]
    assert [r.index for r in stack.replicas("imaging-2")] == [2]
    assert stack.service_addr("imaging-2") == f"127.0.0.1:{p.imaging_2}"
    assert stack.service_addr("jobs") == f"127.0.0.1:{p.jobs},127.0.0.1:{p.jobs_2}"
    assert stack.metrics_url("imaging-2") == f"http://127.0.0.1:{p.imaging_metrics_2}/metrics"
    assert stack.metrics_url("inference") == f"http://127.0.0.1:{p.inference_metrics}/metrics"
    assert list(stack.metrics_urls("gateway")) == ["gateway-1", "gateway-2"]
    with pytest.raises(StackError, match="imaging-1, imaging-2"):
        stack.metrics_url("imaging")
    for bad in ("imaging-3", "inference-2", "nats", "imaging-x"):
        with pytest.raises(StackError, match="unknown"):
            stack.replicas(bad)
    assert stack.nats_url == ",".join(f"nats://127.0.0.1:{p.nats_client(n)}" for n in (1, 2, 3))
    assert [stack.nats_process(n) for n in (1, 2, 3)] == ["nats-1", "nats-2", "nats-3"]
    # The single-node stack keeps its names.
    single = Stack(tmp_path, Ports.free())
    assert [r.name for r in single.replicas("imaging")] == ["imaging"]
    assert single.nats_process() == "nats"
    with pytest.raises(StackError):
        single.nats_process(2)


def test_replica_counts_are_validated(tmp_path: Path) -> None:
    assert Stack(tmp_path, cluster=True).replica_counts == dict(CLUSTER_REPLICAS)
    assert Stack(tmp_path, replicas={"imaging": 2}).replica_counts["imaging"] == 2
    for bad in ({"imaging": 3}, {"imaging": 0}, {"postgres": 2}):
        with pytest.raises(ValueError, match="replicas"):
            Stack(tmp_path, replicas=bad)


def test_each_replica_env_parses_to_its_own_ports_and_the_whole_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(tmp_path, Ports.free(), cluster=True)
    p = stack.ports
    env = stack.service_env("imaging-2")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = WorkerSettings()
    assert settings.grpc_port == p.imaging_2
    assert settings.metrics_port == p.imaging_metrics_2
    assert settings.nats_url == stack.nats_url
    assert settings.stream_replicas == 3
    assert env["PIXMESH_JOBS_ADDR"] == f"127.0.0.1:{p.jobs},127.0.0.1:{p.jobs_2}"
    assert env["PIXMESH_INFERENCE_ADDR"] == f"127.0.0.1:{p.inference}"
    assert stack.service_env("imaging")["PIXMESH_GRPC_PORT"] == str(p.imaging)  # the first
    # A single node: one URL, the default stream replicas, one address per service.
    single = Stack(tmp_path, Ports.free())
    env = single.service_env("imaging")
    assert "PIXMESH_STREAM_REPLICAS" not in env
    assert "," not in env["PIXMESH_NATS_URL"] + env["PIXMESH_JOBS_ADDR"]
    assert ServiceSettings.model_fields["stream_replicas"].default == 1


@pytest.fixture
def replicated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    def fake_spec(
        name: str, env: Mapping[str, str], cwd: Path, process_name: str | None = None
    ) -> ProcessSpec:
        argv = [sys.executable, str(FAKE)]
        return ProcessSpec(process_name or name, argv, env={**os.environ, **env}, stop_timeout=5)

    monkeypatch.setattr(mesh, "service_spec", fake_spec)
    stack = Stack(
        tmp_path, Ports.free(), envoy=False, services=("jobs", "imaging"), replicas={"imaging": 2}
    )
    yield stack
    stack.stop()


def test_one_replica_is_killed_and_restarted_alone(replicated: Stack) -> None:
    stack = replicated
    stack.start_services()
    assert set(stack.pids()) == {"jobs", "imaging-1", "imaging-2"}
    assert stack.is_running("imaging")
    assert stack.kill_service("imaging-2") == -signal.SIGKILL
    assert not stack.is_running("imaging") and stack.is_running("imaging-1")
    assert set(stack.pids()) == {"jobs", "imaging-1"}
    state = json.loads(stack.state_file.read_text())
    assert [p["name"] for p in state["processes"]] == ["jobs", "imaging-1"]
    stack.start_service("imaging")  # starts only what is missing
    assert stack.is_running("imaging-2")
    assert "imaging serving" in stack.log_path("imaging-2").read_text()
    # The service's name covers every replica.
    stack.stop_service("imaging")
    assert set(stack.pids()) == {"jobs"}


@pytest.mark.integration
async def _publish_until_stored(
    js: JetStreamContext, subject: str, data: bytes, msg_id: str, within_s: float = 60.0
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=5.0)
            return
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.js.errors.NoStreamResponseError,
        ):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def test_a_nats_node_is_killed_and_rejoins(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports.free(), cluster=True, services=(), envoy=False, durable=False)
    loop = asyncio.new_event_loop()
    try:
        stack.start_infra()
        assert {f"nats-{n}" for n in (1, 2, 3)} <= set(stack.pids())
        nc = loop.run_until_complete(nats.connect(stack.nats_url.split(",")))
        js = nc.jetstream()
        loop.run_until_complete(js.add_stream(name="R3", subjects=["r3.test"], num_replicas=3))
        loop.run_until_complete(js.publish("r3.test", b"one"))
        stack.kill_nats(2)
        assert not stack.is_running("nats-2")
        # 2 of 3 nodes are a quorum. If the killed node led the stream, a new leader is elected
        # first (seconds, longer on a loaded machine) and the client reconnects: publishers retry,
        # with the same message id so a publish that did land is not stored twice.
        loop.run_until_complete(_publish_until_stored(js, "r3.test", b"two", "two"))
        stack.start_nats(2)  # back, and the meta leader sees every peer current again
        info = loop.run_until_complete(js.stream_info("R3"))
        assert info.state.messages == 2
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        loop.run_until_complete(nc.close())
        with urllib.request.urlopen(f"{stack.nats_monitor_url(2)}/healthz", timeout=2) as r:
            assert r.status == 200
    finally:
        loop.close()
        stack.stop()


def test_kill_from_another_process_then_revive(replicated: Stack) -> None:
    stack = replicated
    stack.start_services()
    assert kill_from_state(stack.state_file, "imaging-2")  # what `python -m deploy.local kill` does
    assert not kill_from_state(stack.state_file, "nope")
    stack._proc("imaging-2").wait(10)
    assert set(stack.exited()) == {"imaging-2"}
    assert stack.revive("imaging-2")  # what a cluster's `up` does when it sees the exit
    assert stack.is_running("imaging-2") and not stack.exited()
    assert not stack.revive("postgres")  # infrastructure is not restarted behind your back


def test_endpoints_list_every_replica_and_nats_node(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports(), cluster=True)
    text = endpoints(stack, "pm_key", tmp_path / "api-key")
    for name in ("jobs-1", "jobs-2", "gateway-2", "imaging-2", "metadata-2", "inference"):
        assert f"{stack.service_addr(name)}   metrics {stack.metrics_url(name)}" in text
    for node in (1, 2, 3):
        assert stack.nats_node_url(node) in text and stack.nats_monitor_url(node) in text
    single = endpoints(Stack(tmp_path, Ports()), None, tmp_path / "api-key")
    assert "imaging-2" not in single and "127.0.0.1:50053" in single and "4223" not in single


def test_replicas_creating_the_r3_streams_at_once_on_a_fresh_cluster_both_start(
    tmp_path: Path,
) -> None:
    """Two processes set up the streams and a consumer together on a new cluster: both start and
    the streams are R3. (Under load such requests were seen to time out while the Raft groups
    formed, failing both replicas' start; Bus now retries the idempotent set-up. This test did
    not reproduce the timeout on an idle machine.)"""
    from services.runtime import bus as busmod
    from services.runtime.bus import Bus

    stack = Stack(tmp_path, Ports.free(), cluster=True, services=(), envoy=False, durable=False)
    loop = asyncio.new_event_loop()

    async def start_two() -> list[int]:
        buses = [
            await Bus.connect(stack.nats_url, f"replica-{i}", stream_replicas=3) for i in (1, 2)
        ]
        try:
            await asyncio.gather(*(b.ensure_streams() for b in buses))
            await asyncio.gather(
                *(
                    b.ensure_consumer(
                        busmod.TASKS_STREAM,
                        "imaging-tasks",
                        busmod.task_subject("imaging"),
                        ack_wait=30.0,
                        max_deliver=5,
                        max_ack_pending=1000,
                    )
                    for b in buses
                )
            )
            infos = [await buses[0].js.stream_info(name) for name in busmod.STREAMS]
            return [i.config.num_replicas for i in infos]
        finally:
            for b in buses:
                await b.close()

    try:
        stack.start_infra()
        assert loop.run_until_complete(start_two()) == [3, 3, 3]
    finally:
        loop.close()
        stack.stop()
