"""The state file of a running stack (<root>/run/stack.json): who started what.

`python -m deploy.local down` runs in another terminal, so it cannot reach the supervising `up`'s
objects; it reads this file instead, asks `up` to stop (SIGTERM) and, if `up` is gone or stuck,
stops the recorded processes itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from deploy.local.process import ProcessRecord


@dataclass(frozen=True, slots=True)
class StackState:
    owner_pid: int
    owner_create_time: float
    ports: dict[str, int]
    processes: tuple[ProcessRecord, ...]

    def owner_alive(self) -> bool:
        try:
            proc = psutil.Process(self.owner_pid)
            same = abs(proc.create_time() - self.owner_create_time) < 0.01
            return same and bool(proc.is_running())
        except psutil.NoSuchProcess:
            return False

    def to_json(self) -> dict[str, Any]:
        return {
            "owner_pid": self.owner_pid,
            "owner_create_time": self.owner_create_time,
            "ports": self.ports,
            "processes": [p.to_json() for p in self.processes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        return cls(
            owner_pid=int(data["owner_pid"]),
            owner_create_time=float(data["owner_create_time"]),
            ports={str(k): int(v) for k, v in data.get("ports", {}).items()},
            processes=tuple(ProcessRecord.from_json(p) for p in data.get("processes", [])),
        )


def current_owner() -> tuple[int, float]:
    pid = os.getpid()
    return pid, psutil.Process(pid).create_time()


def write_state(path: Path, ports: dict[str, int], processes: Iterable[ProcessRecord]) -> None:
    pid, created = current_owner()
    state = StackState(pid, created, ports, tuple(processes))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    tmp.replace(path)  # atomic: `down` never reads half a file


def read_state(path: Path) -> StackState | None:
    try:
        return StackState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # torn or foreign file: nothing we can act on


def stop_from_state(path: Path, owner_grace_s: float = 60.0) -> list[str]:
    """Stop the stack recorded in `path`; returns the names of the processes that were running."""
    state = read_state(path)
    if state is None:
        return []
    running = [p.name for p in state.processes if p.is_alive()]
    if state.owner_alive() and state.owner_pid != os.getpid():
        os.kill(state.owner_pid, signal.SIGTERM)  # `up` stops its children in order
        deadline = time.monotonic() + owner_grace_s
        while state.owner_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    for record in reversed(state.processes):
        record.stop()  # no-op for what the owner already stopped
    path.unlink(missing_ok=True)
    return running


def kill_from_state(path: Path, name: str, sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to the process group of the recorded, running process `name` (a chaos test
    from another terminal); False when no such process runs."""
    state = read_state(path)
    for record in state.processes if state is not None else ():
        if record.name == name and record.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, sig)
            return True
    return False
