"""The child pool's metrics: recycles, crashes (while running or idle) and memory-limit kills
are counted as they happen, and nothing else is counted as one of them."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from services.imaging.isolation import IsolationConfig, ProcessPool, address_space
from services.runtime import metrics
from services.runtime.errors import DeadlineExceeded, Internal, InvalidArgument
from tests.services.imaging import faults

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def service() -> Iterator[str]:
    name = f"imaging-test-{uuid.uuid4().hex[:8]}"
    metrics.configure(name)
    try:
        yield name
    finally:
        metrics.configure("pixmesh")


def count(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": metrics.service()}) or 0.0


def counts() -> tuple[float, float, float]:
    return (
        count("pixmesh_imaging_child_recycles_total"),
        count("pixmesh_imaging_child_crashes_total"),
        count("pixmesh_imaging_memory_kills_total"),
    )


def pool(**overrides: object) -> ProcessPool:
    values: dict[str, object] = {
        "workers": 1,
        "memory_limit_bytes": 1024 * MiB,
        "max_pixels": 50_000_000,
        "kill_grace_s": 0.2,
        "interactive_slots": 0,  # `workers` slots exactly: the counts below assume them
    }
    values.update(overrides)
    return ProcessPool(IsolationConfig(**values))  # type: ignore[arg-type]


async def test_recycles_are_counted_when_a_child_has_run_its_tasks() -> None:
    p = pool(max_tasks_per_child=2)
    try:
        await p.start()  # the warm-up call is the first child's first task
        pids = [await p.run(faults.pid) for _ in range(5)]
    finally:
        p.close()
    # [warm-up, 1] [2, 3] [4, 5]: three children, each done after its second task.
    assert len(set(pids)) == 3
    assert counts() == (3, 0, 0)


async def test_crashes_are_counted_while_running_and_while_idle() -> None:
    p = pool(max_tasks_per_child=1000)
    try:
        with pytest.raises(Internal):
            await p.run(faults.crash, "exit")
        assert counts() == (0, 1, 0)
        os.kill(await p.run(faults.pid), signal.SIGKILL)
        await asyncio.sleep(0.3)
        await p.run(faults.pid)  # finds its child dead, starts another
        assert counts() == (0, 2, 0)
        # A child killed at the deadline is the deadline's doing, not a crash.
        with pytest.raises(DeadlineExceeded):
            await p.run(faults.nap, 30.0, deadline=time.monotonic() + 0.2)
        # Nor is an error the child raised.
        with pytest.raises(KeyError):
            await p.run(faults.boom)
        assert counts() == (0, 2, 0)
    finally:
        p.close()


async def test_memory_limit_kills_are_counted() -> None:
    probe = pool()
    try:
        baseline = await probe.run(address_space)
    finally:
        probe.close()
    small = pool(memory_limit_bytes=baseline + 128 * MiB)
    try:
        with pytest.raises(InvalidArgument):
            await small.run(faults.allocate, 256 * MiB)
        assert await small.run(faults.allocate, 16 * MiB) == 16 * MiB
    finally:
        small.close()
    assert counts() == (0, 0, 1)
