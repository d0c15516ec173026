"""The state file that lets `down` (another process) stop what `up` started."""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.local.process import ManagedProcess, ProcessSpec
from deploy.local.state import read_state, stop_from_state, write_state


def test_round_trip_and_stop_from_state(tmp_path: Path) -> None:
    procs = [
        ManagedProcess(
            ProcessSpec(name, [sys.executable, "-c", "import time; time.sleep(60)"]),
            tmp_path / f"{name}.log",
        )
        for name in ("first", "second")
    ]
    for proc in procs:
        proc.start()
    path = tmp_path / "run" / "stack.json"
    write_state(path, {"nats": 4222}, [p.record() for p in procs])
    state = read_state(path)
    assert state is not None
    assert [p.name for p in state.processes] == ["first", "second"]
    assert state.ports == {"nats": 4222}
    assert state.owner_alive()  # that is us

    assert stop_from_state(path) == ["first", "second"]
    for proc in procs:
        assert proc.wait(5) < 0  # signalled
    assert not path.exists()
    assert stop_from_state(path) == []


def test_unreadable_state_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    assert read_state(path) is None
    path.write_text('{"owner_pid": ')
    assert read_state(path) is None
