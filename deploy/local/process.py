"""One server of the local stack as a child process: own process group, log file, clean stop.

Each child gets its own session (and so its own process group): Ctrl-C in the terminal reaches only
the supervising `up`, which then stops the children in order, and a SIGKILL of the group leaves no
grandchildren behind (Postgres backends, for instance).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import psutil
from tenacity import (
    Retrying,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)


class StackError(RuntimeError):
    """A server of the local stack failed to start, died, or did not become ready."""


class ProcessExitedError(StackError):
    def __init__(self, name: str, returncode: int | None, log: Path, tail: str) -> None:
        super().__init__(f"{name} exited with status {returncode}; last lines of {log}:\n{tail}")
        self.name = name
        self.returncode = returncode


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None  # None: inherit ours
    cwd: Path | None = None
    user: str | None = None  # Postgres refuses to run as root
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0  # then SIGKILL to the whole group


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What the state file keeps so that another process (`down`) can stop this one."""

    name: str
    pid: int
    pgid: int
    create_time: float  # guards against a recycled pid
    stop_signal: int
    stop_timeout: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "pgid": self.pgid,
            "create_time": self.create_time,
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            pgid=int(data["pgid"]),
            create_time=float(data["create_time"]),
            stop_signal=int(data["stop_signal"]),
            stop_timeout=float(data["stop_timeout"]),
        )

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.create_time) < 0.01
            return same and bool(proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    def stop(self) -> None:
        """Stop a process we did not spawn (no Popen to wait on): signal, poll, then SIGKILL."""
        if not self.is_alive():
            return  # gone, or its pid now belongs to someone else: touch nothing
        _signal_pid(self.pid, self.stop_signal)
        deadline = time.monotonic() + self.stop_timeout
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        _kill_group(self.pgid)


@dataclass
class ManagedProcess:
    spec: ProcessSpec
    log_path: Path
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _stop_deadline: float | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise StackError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def start(self) -> None:
        if self.alive:
            raise StackError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appending keeps the history of a service that a test killed and restarted.
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} start: {' '.join(self.spec.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                list(self.spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if self.spec.env is None else dict(self.spec.env),
                cwd=self.spec.cwd,
                start_new_session=True,
                **identity(self.spec.user),
            )

    def record(self) -> ProcessRecord:
        return ProcessRecord(
            name=self.name,
            pid=self.pid,
            pgid=self.pid,  # start_new_session: the child leads its own group
            create_time=psutil.Process(self.pid).create_time(),
            stop_signal=self.spec.stop_signal,
            stop_timeout=self.spec.stop_timeout,
        )

    def send_signal(self, sig: int) -> None:
        """Signal the whole process group (a crash test kills children too)."""
        if self.alive:
            _kill_group(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        if self._popen is None:
            raise StackError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def request_stop(self, timeout: float | None = None) -> None:
        """Send the graceful signal now; `stop()` later waits out what is left of `timeout`.
        Lets independent processes drain side by side instead of one after another."""
        if self._popen is None or self._popen.poll() is not None or self._stop_deadline:
            return
        _signal_pid(self._popen.pid, self.spec.stop_signal)
        grace = self.spec.stop_timeout if timeout is None else timeout
        self._stop_deadline = time.monotonic() + grace

    def stop(self, timeout: float | None = None) -> int | None:
        """Graceful signal to the leader, SIGKILL to the group after `timeout`; returns the status."""
        if self._popen is None:
            return None
        self.request_stop(timeout)
        if self._stop_deadline is not None:
            try:
                self._popen.wait(max(0.0, self._stop_deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(self._popen.pid)
                self._popen.wait()
            self._stop_deadline = None
        # The leader is gone; anything left in its group is an orphan.
        _kill_group(self._popen.pid)
        return self._popen.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, probe: Callable[[], object], timeout: float, what: str = "ready") -> None:
        """Poll `probe` (raises until the server answers); fail fast if the process exits."""

        def attempt() -> None:
            if not self.alive:
                raise ProcessExitedError(self.name, self.returncode, self.log_path, self.log_tail())
            probe()

        retrying = Retrying(
            stop=stop_after_delay(timeout),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_not_exception_type(ProcessExitedError),
            reraise=True,
        )
        try:
            retrying(attempt)
        except ProcessExitedError:
            raise
        except Exception as exc:
            raise StackError(
                f"{self.name} not {what} after {timeout:.0f}s ({exc!r}); "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            ) from exc


class Identity(TypedDict):
    user: str | None
    group: int | None
    extra_groups: list[int] | None


def identity(user: str | None) -> Identity:
    """Popen arguments that run a child as `user`, with that user's group and no others: Popen's
    `user=` alone keeps root's groups, and a 0700 root-group folder then reads as group-denied."""
    if user is None:
        return Identity(user=None, group=None, extra_groups=None)
    return Identity(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
