"""bench.batch's CPU accounting: what a live descendant reaped counts (the imaging forkserver
replaces its pipeline processes every max_tasks_per_child tasks and reaps them itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from bench.batch import tree_cpu

# A grandchild that burns 0.4 s of CPU, reaped by its parent, which then stays alive.
_REAPER = """
import os, sys, time
pid = os.fork()
if pid == 0:
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    os._exit(0)
os.waitpid(pid, 0)
print("reaped", flush=True)
time.sleep(60)
"""
_PARENT = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {_REAPER!r}]); time.sleep(60)"


def test_tree_cpu_counts_what_a_live_descendant_reaped() -> None:
    top = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert top.stdout is not None
        assert top.stdout.readline().strip() == "reaped"
        own, children = tree_cpu(top.pid)
        # The reaper's own start-up is ~0.05 s; the 0.4 s is only in its children_* counters.
        assert children >= 0.35
        assert own < 0.35
    finally:
        os.killpg(top.pid, signal.SIGKILL)
        top.wait()
