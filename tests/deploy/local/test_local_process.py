"""Child processes: logs, graceful stop, SIGKILL escalation, no orphans, fail-fast readiness."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from deploy.local.process import (
    ManagedProcess,
    ProcessExitedError,
    ProcessRecord,
    ProcessSpec,
    StackError,
)


def _python(name: str, code: str, **kw: object) -> ProcessSpec:
    return ProcessSpec(name, [sys.executable, "-c", code], **kw)  # type: ignore[arg-type]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for_line(proc: ManagedProcess, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = proc.log_path.read_text().splitlines()
        if len(lines) >= 3:  # blank, "=== start", then the child's first line
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError("child printed nothing")


def test_output_goes_to_the_log_and_sigterm_stops(tmp_path: Path) -> None:
    proc = ManagedProcess(
        _python("p", "import time; print('hello', flush=True); time.sleep(60)"), tmp_path / "p.log"
    )
    proc.start()
    assert _wait_for_line(proc) == "hello"
    assert proc.alive
    assert proc.stop() == -signal.SIGTERM
    assert not proc.alive
    assert "=== " in proc.log_path.read_text()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True)"
    proc = ManagedProcess(_python("stubborn", code + "; time.sleep(60)"), tmp_path / "s.log")
    proc.start()
    _wait_for_line(proc)
    started = time.monotonic()
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_stop_leaves_no_grandchildren(tmp_path: Path) -> None:
    code = (
        "import subprocess,time; p = subprocess.Popen(['sleep', '60']); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    proc = ManagedProcess(_python("parent", code), tmp_path / "g.log")
    proc.start()
    grandchild = int(_wait_for_line(proc))
    assert not _gone(grandchild)
    proc.stop()
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_wait_ready_fails_fast_when_the_process_dies(tmp_path: Path) -> None:
    proc = ManagedProcess(_python("dies", "print('boom'); raise SystemExit(3)"), tmp_path / "d.log")
    proc.start()

    def never() -> None:
        raise ConnectionError("not yet")

    started = time.monotonic()
    with pytest.raises(ProcessExitedError, match="boom") as info:
        proc.wait_ready(never, timeout=30)
    assert info.value.returncode == 3
    assert time.monotonic() - started < 10


def test_wait_ready_polls_until_the_probe_passes_or_times_out(tmp_path: Path) -> None:
    proc = ManagedProcess(_python("sleepy", "import time; time.sleep(60)"), tmp_path / "w.log")
    proc.start()
    calls = []

    def third_time_lucky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")

    proc.wait_ready(third_time_lucky, timeout=10)
    assert len(calls) == 3
    with pytest.raises(StackError, match="not ready after"):
        proc.wait_ready(lambda: (_ for _ in ()).throw(ConnectionError("never")), timeout=0.3)
    proc.stop()


def test_record_stops_a_process_spawned_elsewhere(tmp_path: Path) -> None:
    proc = ManagedProcess(_python("other", "import time; time.sleep(60)"), tmp_path / "o.log")
    proc.start()
    record = ProcessRecord.from_json(proc.record().to_json())
    assert record.is_alive()
    record.stop()
    assert proc.wait(5) == -signal.SIGTERM
    assert not record.is_alive()


def test_record_of_a_recycled_pid_touches_nothing(tmp_path: Path) -> None:
    proc = ManagedProcess(_python("innocent", "import time; time.sleep(60)"), tmp_path / "i.log")
    proc.start()
    real = proc.record()
    stale = ProcessRecord(
        real.name, real.pid, real.pgid, real.create_time - 100, real.stop_signal, 0.1
    )
    assert not stale.is_alive()
    stale.stop()
    assert proc.alive
    proc.stop()
