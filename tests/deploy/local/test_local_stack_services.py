"""Stack's per-service controls, with a stand-in service (grpc.health only) and no servers."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from deploy.local import Ports, ProcessExitedError, Stack, mesh
from deploy.local.process import ProcessSpec

FAKE = Path(__file__).with_name("fake_service.py")


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    def fake_spec(
        name: str, env: Mapping[str, str], cwd: Path, process_name: str | None = None
    ) -> ProcessSpec:
        return ProcessSpec(
            process_name or name,
            [sys.executable, str(FAKE)],
            env={**os.environ, **env},
            stop_timeout=5,
        )

    monkeypatch.setattr(mesh, "service_spec", fake_spec)
    stack = Stack(tmp_path, Ports.free(), envoy=False, services=("jobs", "imaging"))
    yield stack
    stack.stop()


def test_services_start_healthy_and_are_recorded(stack: Stack) -> None:
    stack.start_services()
    assert set(stack.pids()) == {"jobs", "imaging"}
    state = json.loads(stack.state_file.read_text())
    assert [p["name"] for p in state["processes"]] == ["jobs", "imaging"]
    assert "imaging serving" in stack.log_path("imaging").read_text()


def test_kill_then_restart_a_service(stack: Stack) -> None:
    stack.start_services()
    assert stack.kill_service("imaging") == -signal.SIGKILL
    assert not stack.is_running("imaging")
    assert stack.exited() == {"imaging": -signal.SIGKILL}
    assert [p["name"] for p in json.loads(stack.state_file.read_text())["processes"]] == ["jobs"]

    # Not SERVING for a moment: start_service must wait for it, not just for the port.
    stack.start_service("imaging", env={"FAKE_SERVING_AFTER_S": "0.5"})
    assert stack.is_running("imaging")
    assert stack.timings["imaging"] >= 0.5


def test_graceful_stop_and_full_teardown(stack: Stack) -> None:
    stack.start_services()
    assert stack.stop_service("jobs") == 0  # SIGTERM: the service drained and exited cleanly
    stack.stop()
    assert stack.pids() == {}
    assert not stack.state_file.exists()


def test_a_service_that_dies_at_start_fails_fast_with_its_log(stack: Stack) -> None:
    with pytest.raises(ProcessExitedError, match="failing on purpose"):
        stack.start_service("jobs", env={"FAKE_EXIT": "4"})
