"""The batch lane's CPU priority in the imaging pool (services/imaging/isolation.py, "Lanes"): a
batch task runs in a process `batch_nice` steps nicer than the service, an interactive task at the
service's own priority, and a lowered process is never handed to an interactive task."""

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from services.imaging.isolation import IsolationConfig, ProcessPool
from services.imaging.settings import ImagingSettings
from services.runtime.lanes import BATCH_LANE, LANE

# By its full name, which the child processes can import.
from tests.services.imaging import faults

MiB = 1024 * 1024
BASE = os.getpriority(os.PRIO_PROCESS, 0)


def thread_nices(pid: int) -> set[int]:
    """The nice value of every thread of `pid`, read from /proc as `ps` does (stat field 19)."""
    nices = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        nices.add(int(fields[16]))  # fields from the third (state) on: the 19th is [16]
    return nices


@asynccontextmanager
async def started(
    workers: int, interactive_slots: int, batch_nice: int = 5, max_tasks_per_child: int = 200
) -> AsyncIterator[ProcessPool]:
    """A started pool, closed on the way out."""
    p = ProcessPool(
        IsolationConfig(
            workers=workers,
            memory_limit_bytes=1024 * MiB,
            max_pixels=50_000_000,
            interactive_slots=interactive_slots,
            batch_nice=batch_nice,
            max_tasks_per_child=max_tasks_per_child,
        )
    )
    await p.start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    async with started(1, 1) as p:
        yield p


async def in_batch_lane(call: Callable[[], Awaitable[Any]]) -> Any:
    async def task() -> Any:
        LANE.set(BATCH_LANE)  # this task's own context, as the Consumer's batch lane sets it
        return await call()

    return await asyncio.create_task(task())


async def test_a_batch_task_runs_nicer_than_an_interactive_one(pool: ProcessPool) -> None:
    batch = asyncio.create_task(in_batch_lane(lambda: pool.run(faults.nap_priority, 1.0)))
    await asyncio.sleep(0.3)  # the batch task holds the slot batches may use
    pid, nice = await pool.run(faults.priority)
    batch_pid, batch_nice = await batch
    assert (nice, batch_nice) == (BASE, min(19, BASE + 5))
    assert pid != batch_pid
    # Every thread of each process, seen from outside as the scheduler sees it.
    assert thread_nices(batch_pid) == {batch_nice}
    assert thread_nices(pid) == {BASE}


def own_group() -> str:
    with open("/proc/self/autogroup") as f:
        return f.read().strip()


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup (Linux)")
async def test_a_batch_task_runs_in_a_scheduling_group_of_its_own(pool: ProcessPool) -> None:
    # Autogroup groups by session, and nice values weigh only inside a group: a lowered process
    # in the service's group would hold that group's whole share against the other services'.
    service_sid, service_group = os.getsid(0), own_group()
    batch_pid, batch_sid, batch_group = await in_batch_lane(
        lambda: pool.run(faults.scheduling_group)
    )
    assert batch_sid == batch_pid != service_sid  # a session (and so an autogroup) of its own
    assert batch_group != service_group
    assert batch_group.endswith(f" nice {min(19, BASE + 5)}")
    # The next batch task in that process finds it there already.
    assert await in_batch_lane(lambda: pool.run(faults.scheduling_group)) == (
        batch_pid,
        batch_sid,
        batch_group,
    )
    # An interactive task runs in the service's session and group, in another process.
    pid, sid, group = await pool.run(faults.scheduling_group)
    assert (pid != batch_pid, sid, group) == (True, service_sid, service_group)


async def test_batch_nice_zero_keeps_batch_tasks_in_the_services_group() -> None:
    async with started(1, 0, batch_nice=0) as pool:
        _, sid, _ = await in_batch_lane(lambda: pool.run(faults.scheduling_group))
        assert sid == os.getsid(0)


async def test_an_interactive_task_never_runs_in_a_lowered_process() -> None:
    async with started(1, 0) as pool:  # one slot for both lanes
        batch_pid, batch_nice = await in_batch_lane(lambda: pool.run(faults.priority))
        assert batch_nice > BASE
        pid, nice = await pool.run(faults.priority)
        # A fresh process took the lowered one's place (an unprivileged process cannot lower
        # its nice value again); the next batch task lowers that one.
        assert (nice, pid != batch_pid) == (BASE, True)
        assert await in_batch_lane(lambda: pool.run(faults.priority)) == (pid, batch_nice)


async def test_each_lane_takes_its_own_kind_of_slot_first() -> None:
    async with started(2, 1) as pool:
        batch_pid, _ = await in_batch_lane(lambda: pool.run(faults.priority))
        # Interactive tasks, one after another, take the slots at the service's priority: the
        # lowered one is left alone (not replaced) for the next batch task.
        interactive = {await pool.run(faults.priority) for _ in range(4)}
        assert {nice for _, nice in interactive} == {BASE}
        assert batch_pid not in {pid for pid, _ in interactive}
        assert (await in_batch_lane(lambda: pool.run(faults.priority)))[0] == batch_pid


async def test_a_recycled_process_starts_at_the_services_priority() -> None:
    # The start-up task is the first process's first; the batch task its last.
    async with started(1, 0, max_tasks_per_child=2) as pool:
        batch_pid, batch_nice = await in_batch_lane(lambda: pool.run(faults.priority))
        assert batch_nice > BASE
        pid, nice = await pool.run(faults.priority)
        assert (nice, pid != batch_pid) == (BASE, True)


async def test_batch_nice_zero_runs_batch_tasks_at_the_services_priority() -> None:
    async with started(1, 0, batch_nice=0) as pool:
        batch_pid, batch_nice = await in_batch_lane(lambda: pool.run(faults.priority))
        assert batch_nice == BASE
        assert await pool.run(faults.priority) == (batch_pid, BASE)  # the same process kept


def test_the_setting_reaches_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImagingSettings().isolation.batch_nice == 10
    monkeypatch.setenv("PIXMESH_WORKER_BATCH_NICE", "19")
    assert ImagingSettings().isolation.batch_nice == 19
    with pytest.raises(ValueError):
        IsolationConfig(workers=1, memory_limit_bytes=None, max_pixels=1, batch_nice=20)
