import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator

import psutil
import pytest

from services.imaging.errors import DEADLINE_EXCEEDED, IMAGE_TOO_LARGE, WORKER_CRASHED
from services.imaging.isolation import IsolationConfig, ProcessPool, address_space
from services.runtime.errors import DeadlineExceeded, Internal, InvalidArgument
from services.runtime.lanes import BATCH_LANE, LANE

# By its full name, which the child processes can import (a relative import would give the
# module a name that only pytest knows).
from tests.services.imaging import faults

MiB = 1024 * 1024


def config(**overrides: object) -> IsolationConfig:
    values: dict[str, object] = {
        "workers": 2,
        "memory_limit_bytes": 1024 * MiB,
        "max_pixels": 50_000_000,
        "kill_grace_s": 0.2,
        "interactive_slots": 0,  # `workers` slots exactly (the lane test sets its own)
    }
    values.update(overrides)
    return IsolationConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    p = ProcessPool(config())
    await p.start()
    yield p
    p.close()


async def test_runs_in_a_child_process_under_the_memory_limit(pool: ProcessPool) -> None:
    child = await pool.run(faults.pid)
    assert child != os.getpid()
    assert await pool.run(faults.rlimit_as) == (1024 * MiB, 1024 * MiB)


@pytest.mark.parametrize("how", ["abort", "segfault", "exit"])
async def test_a_crash_fails_only_its_own_task(pool: ProcessPool, how: str) -> None:
    neighbour = asyncio.create_task(pool.run(faults.nap, 0.6))
    await asyncio.sleep(0.2)  # the neighbour is running in the other child

    with pytest.raises(Internal) as err:
        await pool.run(faults.crash, how)

    assert err.value.reason == WORKER_CRASHED
    assert err.value.retryable  # redelivered; out of deliveries, FAILED with this reason
    neighbour_pid = await neighbour  # untouched by the crash
    # Both slots serve again, the crashed one from a fresh process.
    pids = await asyncio.gather(pool.run(faults.nap, 0.2), pool.run(faults.nap, 0.2))
    assert neighbour_pid in pids
    assert len(set(pids)) == 2


async def test_a_child_killed_while_idle_is_replaced(pool: ProcessPool) -> None:
    first, second = await asyncio.gather(pool.run(faults.nap, 0.1), pool.run(faults.nap, 0.1))
    os.kill(first, signal.SIGKILL)
    os.kill(second, signal.SIGKILL)
    await asyncio.sleep(0.2)
    pids = {await pool.run(faults.pid) for _ in range(4)}
    assert not pids & {first, second}


async def test_memory_error_is_a_permanent_image_too_large(pool: ProcessPool) -> None:
    baseline = await pool.run(address_space)  # Python and the codecs, mapped
    small = ProcessPool(config(workers=1, memory_limit_bytes=baseline + 128 * MiB))
    try:
        with pytest.raises(InvalidArgument) as err:
            await small.run(faults.allocate, 256 * MiB)
        assert err.value.reason == IMAGE_TOO_LARGE
        assert not err.value.retryable
        assert await small.run(faults.allocate, 16 * MiB) == 16 * MiB  # the child lives on
    finally:
        small.close()


async def test_a_child_busy_past_the_deadline_is_killed(pool: ProcessPool) -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as err:
        await pool.run(faults.nap, 30.0, deadline=started + 0.3)
    assert err.value.reason == DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0  # deadline + kill_grace_s, not 30 s
    # The slot is usable again (a fresh child), and both run at once.
    pids = await asyncio.gather(pool.run(faults.nap, 0.1), pool.run(faults.nap, 0.1))
    assert len(set(pids)) == 2


async def test_errors_from_the_child_leave_it_alive() -> None:
    pool = ProcessPool(config(workers=1))
    try:
        child = await pool.run(faults.pid)
        with pytest.raises(DeadlineExceeded):  # the pipeline's own check between steps
            await pool.run(faults.late, deadline=time.monotonic() + 5)
        assert await pool.run(faults.pid) == child
    finally:
        pool.close()


async def test_bugs_cross_the_process_boundary_unchanged(pool: ProcessPool) -> None:
    with pytest.raises(KeyError):
        await pool.run(faults.boom)
    assert await pool.run(faults.pid)


async def test_shutdown_signals_are_left_to_the_parent() -> None:
    # `make down` and systemd signal the whole process group: the parent drains its tasks, so
    # the child must finish the one it has, and the forkserver must live on to replace it.
    pool = ProcessPool(config(workers=1))
    try:
        child = await pool.run(faults.pid)
        forkserver = psutil.Process(child).ppid()
        task = asyncio.create_task(pool.run(faults.nap, 0.5))
        await asyncio.sleep(0.1)
        for pid in (child, forkserver):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGINT)
        assert await task == child
        os.kill(child, signal.SIGKILL)  # a replacement is forked by the same forkserver
        await asyncio.sleep(0.1)
        replacement = await pool.run(faults.pid)
        assert replacement != child
        assert psutil.Process(replacement).ppid() == forkserver
    finally:
        pool.close()


async def test_children_are_recycled() -> None:
    pool = ProcessPool(config(workers=1, max_tasks_per_child=2))
    try:
        pids = [await pool.run(faults.pid) for _ in range(5)]
    finally:
        pool.close()
    # At most two tasks per child (start-up's warm-up call counts as one).
    assert max(Counter(pids).values()) == 2
    assert len(set(pids)) >= 3


async def test_close_stops_the_children() -> None:
    pool = ProcessPool(config())
    pids = await asyncio.gather(pool.run(faults.nap, 0.1), pool.run(faults.nap, 0.1))
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_batch_tasks_leave_the_interactive_slot_free() -> None:
    pool = ProcessPool(config(workers=1, interactive_slots=1))
    await pool.start()

    async def batch(seconds: float) -> tuple[int, float]:
        LANE.set(BATCH_LANE)  # this task's own context, as the Consumer's batch lane sets it
        pid = await pool.run(faults.nap, seconds)
        return pid, time.monotonic()

    try:
        first = asyncio.create_task(batch(1.5))
        second = asyncio.create_task(batch(0.1))
        await asyncio.sleep(0.2)  # the first batch task holds the one slot batches may use
        interactive = await pool.run(faults.pid)  # not behind the batch tasks
        interactive_done = time.monotonic()
        (first_pid, first_done), (_, second_done) = await asyncio.gather(first, second)
    finally:
        pool.close()
    # The interactive task ran beside the first batch task; the second batch task waited for it.
    assert interactive_done < first_done < second_done
    assert interactive != first_pid
