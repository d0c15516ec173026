"""The fleet status against the real stack: every service announces itself, the job registry
reads the queues, dead letters and job counts, and the gateway serves it to the SDK, to REST
through Envoy (GET /v1/fleet) and to `pixmesh status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import pixmesh
from deploy.local import Stack
from pixmesh import errors, ops
from pixmesh.common.v1.fleet_pb2 import FleetStatus
from pixmesh.common.v1.job_pb2 import Job

pytestmark = pytest.mark.integration

SERVICES = ["gateway", "jobs", "imaging", "inference", "metadata"]
# A replica killed by an earlier test (no goodbye) is dropped after 3 missed 5 s announcements.
SETTLE_S = 25.0


def _settled(client: pixmesh.Client) -> FleetStatus:
    """The status once every service has exactly one replica."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        status = client.fleet_status()
        replicas = {s.service: s.replicas for s in status.services}
        if all(replicas.get(name) == 1 for name in SERVICES):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas did not settle at 1: {replicas}")
        time.sleep(0.5)


def test_each_service_has_one_replica_and_its_queues(
    stack: Stack, grpc_target: str, admin_key: str
) -> None:
    with pixmesh.Client(grpc_target, admin_key, timeout=10) as client:
        status = _settled(client)
    assert [s.service for s in status.services][:5] == SERVICES
    assert not status.warnings
    by_name = {s.service: s for s in status.services}
    for name in SERVICES:
        (instance,) = by_name[name].instances
        assert instance.grpc_address == stack.service_addr(name)
        assert instance.instance.endswith(tuple("0123456789")) and "-" in instance.instance
        assert instance.started_at.seconds > 0 and instance.last_seen.seconds > 0
        assert instance.version
    queues = {name: {(q.stream, q.consumer) for q in by_name[name].queues} for name in SERVICES}
    assert queues == {
        "gateway": set(),
        "jobs": {("PIXMESH_EVENTS", "jobs-task-events")},
        # Each worker's task queue and its batch lane's (services/runtime/lanes.py).
        "imaging": {("PIXMESH_TASKS", "imaging-tasks"), ("PIXMESH_TASKS", "imaging-batch-tasks")},
        "inference": {
            ("PIXMESH_TASKS", "inference-tasks"),
            ("PIXMESH_TASKS", "inference-batch-tasks"),
        },
        "metadata": {
            ("PIXMESH_TASKS", "metadata-tasks"),
            ("PIXMESH_TASKS", "metadata-batch-tasks"),
            ("PIXMESH_EVENTS", "metadata-uploads"),
        },
    }
    assert status.jobs.window.seconds == 60


def test_a_job_shows_in_the_rates(grpc_target: str, admin_key: str, photo: bytes) -> None:
    with pixmesh.Client(grpc_target, admin_key, timeout=30, watch_timeout=60) as client:
        job = client.process(photo, [ops.resize(64, 64), ops.convert("png")])
        assert job.state == Job.SUCCEEDED, job
        jobs = client.fleet_status().jobs
    # The job was created and finished within the last minute (earlier tests' jobs may count
    # too, but never fewer than this one).
    assert jobs.created >= 1 and jobs.finished >= 1
    assert jobs.created_per_second == pytest.approx(jobs.created / 60)
    assert jobs.finished_per_second == pytest.approx(jobs.finished / 60)


def test_rest_get_v1_fleet_through_envoy(rest_url: str, admin_key: str) -> None:
    resp = httpx.get(
        f"{rest_url}/v1/fleet", headers={"authorization": f"Bearer {admin_key}"}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    status = resp.json()["status"]
    assert [s["service"] for s in status["services"]][:5] == SERVICES
    imaging = next(s for s in status["services"] if s["service"] == "imaging")
    assert imaging["queues"][0]["consumer"] == "imaging-tasks"
    assert imaging["queues"][0]["stream"] == "PIXMESH_TASKS"
    assert "window" in status["jobs"]
    # Like every call, it needs a key.
    assert httpx.get(f"{rest_url}/v1/fleet", timeout=10).status_code == 401


def test_fleet_status_needs_the_admin_scope(rest_url: str, grpc_target: str, api_key: str) -> None:
    """Deployment-wide: a tenant's read/write key is refused (403, SCOPE_MISSING)."""
    resp = httpx.get(
        f"{rest_url}/v1/fleet", headers={"authorization": f"Bearer {api_key}"}, timeout=10
    )
    assert resp.status_code == 403, resp.text
    assert "SCOPE_MISSING" in resp.text and "services" not in resp.text
    with (
        pixmesh.Client(grpc_target, api_key, timeout=10) as client,
        pytest.raises(errors.PermissionDenied) as info,
    ):
        client.fleet_status()
    assert info.value.reason == "SCOPE_MISSING"


def test_pixmesh_status_cli(grpc_target: str, admin_key: str, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("pixmesh")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    env = {**os.environ, "PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": admin_key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, "status", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    table = cli()
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["SERVICE", "REPLICAS", "QUEUE"]
    rows = {line.split()[0]: line.split() for line in lines[1:] if line[:1].strip()}
    assert rows["imaging"][2] == "imaging-tasks"
    assert rows["jobs"][2] == "jobs-task-events"
    assert any(line.startswith("jobs/s over the last 60s:") for line in lines)
    as_json = cli("--json")
    assert as_json.returncode == 0, as_json.stderr
    names = [s["service"] for s in json.loads(as_json.stdout)["services"]]
    assert names[:5] == SERVICES


def test_sdk_needs_a_key(grpc_target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIXMESH_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pixmesh.Client(grpc_target, timeout=10) as client, pytest.raises(errors.Unauthenticated):
        client.fleet_status()
