"""Run each pipeline in a child process, so that a decoder crash costs one task, not the worker.

Decoders are C code fed by strangers. In a thread, a segfault, an abort() or a runaway
allocation in one of them kills the whole worker and every task it holds. Here each call runs in
a child process instead:

- The pool is `workers` single-process executors ("slots"), each running one task at a time. The
  stdlib ProcessPoolExecutor fails every future it holds when any of its workers dies, so one
  executor of N could not tell the task that killed a worker from its innocent neighbours; with
  one process per executor the culprit is known. Only its task fails, with a retryable
  WORKER_CRASHED (the bus redelivers it, and after max_deliver deliveries it ends FAILED with that
  reason); the slot gets a fresh process and the other tasks carry on.
- Lanes: `workers` slots take any task; `interactive_slots` more take interactive tasks only,
  so that a batch (services/runtime/lanes.py), which may use every other slot, never makes an
  interactive task wait for a slot. It still shares the cores with the batch's tasks, so a
  batch task runs in a process `batch_nice` steps nicer than the service: the scheduler gives
  the interactive task's process (and the rest of the mesh) the CPU first, and the batch the
  rest. An unprivileged process may raise its nice value but never lower it again (without
  CAP_SYS_NICE or an RLIMIT_NICE, which containers do not have; SCHED_IDLE is as one-way), so
  a slot's process is lowered when a batch task first takes it and stays so: batch tasks take
  lowered slots first, interactive ones slots at the service's priority, and an interactive
  task that finds only a lowered slot idle gets a fresh process in it (a fork of the
  forkserver). At most `workers` slots are ever lowered, as at most that many batch tasks run.
  A lowered process also leaves the service's scheduling group: where Linux groups processes by
  session for the CPU (autogroup, the default on a desktop or a plain host when the processes sit
  in no cpu cgroup of their own, as `make up` and the bench run them), nice values weigh only
  inside a group, and the groups share the CPU equally: the batch's processes, in the service's
  group, held that whole group's share against the gateway's, the jobs service's, SeaweedFS's
  and every other group that serves the interactive job. A lowered process starts a session of
  its own (setsid) and gives its group the same nice value (/proc/self/autogroup), so the batch
  takes the CPU the rest of the machine leaves. Under a cpu cgroup (a container) autogroup does
  not apply: there the nice value alone ranks it against the processes of its container.
- RLIMIT_AS caps each child's address space, so a bomb that got past the header checks raises
  MemoryError (a permanent IMAGE_TOO_LARGE) instead of pushing the host into the OOM killer.
- The pipeline checks the deadline between steps; a child still busy `kill_grace_s` after the
  deadline (one step that never returns) is killed, and the task fails with DEADLINE_EXCEEDED.
- Children are forked from a forkserver that has already imported `preload` (Pillow and the
  pipeline), so a replacement is ready in milliseconds, and each child is recycled after
  `max_tasks_per_child` tasks to give fragmented heap memory back to the OS.
- The forkserver and the children ignore SIGTERM and SIGINT: a process manager that signals the
  whole group means the service, which drains its tasks and then stops them. They exit with the
  service process, however it ends.

A child has no tracer: callers turn timings returned by the child into spans.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image

from services.imaging.errors import DEADLINE_EXCEEDED, IMAGE_TOO_LARGE, WORKER_CRASHED
from services.runtime import metrics
from services.runtime.errors import DeadlineExceeded, Internal, InvalidArgument, Unavailable
from services.runtime.imageprobe import configure_pillow
from services.runtime.lanes import in_batch_lane
from services.runtime.logs import setup_logging

log = logging.getLogger(__name__)

T = TypeVar("T")

# Signals a process manager sends to the whole process group on shutdown (`make down` and
# systemd do; so does the test stack). The parent drains, then stops its children itself.
_SHUTDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

# The highest (nicest) nice value on Linux.
_MAX_NICE = 19


@dataclass(frozen=True)
class IsolationConfig:
    workers: int
    # Address-space limit of each child; None: unlimited.
    memory_limit_bytes: int | None
    # Pillow's MAX_IMAGE_PIXELS in the children (see imageprobe.configure_pillow).
    max_pixels: int
    max_tasks_per_child: int = 200
    kill_grace_s: float = 2.0
    # Slots beyond `workers` that batch-lane tasks never take (see the module doc).
    interactive_slots: int = 1
    # How many steps nicer than the service a batch task's process runs (0: as the service).
    batch_nice: int = 10
    # Modules the forkserver imports once, so that children start warm.
    preload: Sequence[str] = ("services.imaging.forkserver_init", "services.imaging.service")
    service_name: str = "imaging"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_tasks_per_child < 1:
            raise ValueError("workers and max_tasks_per_child must be positive")
        if self.interactive_slots < 0:
            raise ValueError("interactive_slots must not be negative")
        if not 0 <= self.batch_nice <= _MAX_NICE:
            raise ValueError(f"batch_nice must be within 0-{_MAX_NICE}")


@dataclass
class MemoryLimitExceeded(InvalidArgument):
    """A pipeline hit its child's memory limit (a MemoryError there): IMAGE_TOO_LARGE, told
    apart from the same reason found in a header, for pixmesh_imaging_memory_kills_total."""

    reason: str = IMAGE_TOO_LARGE


class ProcessPool:
    """Runs picklable module-level functions in isolated child processes; see the module doc."""

    def __init__(self, config: IsolationConfig) -> None:
        self.config = config
        self._context = multiprocessing.get_context("forkserver")
        self._idle = _IdleSlots()
        # The nice value of a process forked from the forkserver (the service's, when it
        # started) and that of a batch task's process; set in start().
        self._nice = self._batch_nice = 0
        # Batch-lane tasks hold one of these while they wait for and use a slot.
        self._batch = asyncio.Semaphore(config.workers)
        self._slots: list[_Slot] = []
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Start the forkserver and one child per slot, so the first tasks pay no start-up."""
        if self._started:
            return
        self._started = True
        self._nice = os.getpriority(os.PRIO_PROCESS, 0)
        self._batch_nice = min(_MAX_NICE, self._nice + self.config.batch_nice)
        try:
            self._slots = await asyncio.to_thread(self._start_children)
        except BaseException:
            self._started = False
            raise
        for slot in self._slots:
            self._idle.put(slot)

    async def run(self, fn: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """`fn(*args)` in a child; `deadline` is absolute on the `time.monotonic()` clock
        (system-wide on Linux, so the child can check the same value).

        Raises what `fn` raises (ServiceErrors cross the process boundary intact), InvalidArgument
        IMAGE_TOO_LARGE on MemoryError, Internal WORKER_CRASHED (retryable) when the child dies,
        DeadlineExceeded when it is still busy `kill_grace_s` after the deadline.
        """
        if self._closed:
            raise Unavailable(message="the image worker is shutting down")
        await self.start()
        if in_batch_lane():
            async with self._batch:
                return await self._take_slot(fn, args, deadline, batch=True)
        return await self._take_slot(fn, args, deadline, batch=False)

    async def _take_slot(
        self, fn: Callable[..., T], args: tuple[Any, ...], deadline: float | None, *, batch: bool
    ) -> T:
        slot = await self._idle.take(lowered=batch)
        try:
            if not batch and slot.lowered:
                # Its process cannot be given its priority back: a fresh one takes its place.
                slot.reset(kill=False)
            nice = self._batch_nice if batch else self._nice
            return await self._run_in(slot, fn, args, deadline, nice)
        finally:
            self._idle.put(slot)

    def close(self) -> None:
        """Stop every child; call after the consumer has drained (nothing is running)."""
        self._closed = True
        for slot in self._slots:
            slot.executor.shutdown(wait=True, cancel_futures=True)

    async def _run_in(
        self,
        slot: _Slot,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        deadline: float | None,
        nice: int,
    ) -> T:
        future = asyncio.wrap_future(slot.submit(fn, args, nice))
        try:
            finished = await self._wait(future, deadline)
        except asyncio.CancelledError:
            # The caller gave up (drain timeout): the child may still be busy; free the slot.
            slot.reset(kill=True)
            raise
        if not finished:
            slot.reset(kill=True)
            raise DeadlineExceeded(
                message="the deadline passed while the image was being processed",
                reason=DEADLINE_EXCEEDED,
            )
        try:
            return future.result()
        except MemoryLimitExceeded:
            metrics.IMAGING_MEMORY_KILLS().inc()
            raise
        except BrokenProcessPool as exc:
            slot.reset(kill=False)
            metrics.IMAGING_CHILD_CRASHES().inc()
            log.warning("image worker process died", extra={"function": fn.__qualname__})
            raise Internal(
                message="the image worker process died while processing this image",
                reason=WORKER_CRASHED,
                retryable=True,
            ) from exc

    async def _wait(self, future: asyncio.Future[T], deadline: float | None) -> bool:
        """Whether `future` finished before `kill_grace_s` after the deadline."""
        timeout = None
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic()) + self.config.kill_grace_s
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
        finally:
            if not future.done():
                future.cancel()  # nobody will read it: the child is about to be killed
        return bool(done)

    def _new_executor(self) -> _Executor:
        c = self.config
        executor = ProcessPoolExecutor(
            1,
            mp_context=self._context,
            initializer=_init_child,
            initargs=(
                os.getpid(),
                c.memory_limit_bytes,
                c.max_pixels,
                c.service_name,
                c.log_level,
            ),
            max_tasks_per_child=c.max_tasks_per_child,
        )
        return _Executor(executor, c.max_tasks_per_child, self._nice)

    def _start_children(self) -> list[_Slot]:
        self._context.set_forkserver_preload(list(self.config.preload))
        count = self.config.workers + self.config.interactive_slots
        slots = [_Slot(self._new_executor) for _ in range(count)]
        try:
            for slot in slots:
                slot.submit(_ready, (), self._nice).result()
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "the pipeline processes died while starting (their error is logged above); "
                "is the memory limit below what Python and the codecs need?"
            ) from exc
        return slots


class _IdleSlots:
    """The idle slots. `take(lowered=True)` (a batch task) prefers a slot whose process is
    lowered, `take(lowered=False)` one at the service's priority; while none is idle, callers
    wait in turn and the first gets the next slot put back, whichever it is."""

    def __init__(self) -> None:
        self._idle: list[_Slot] = []
        # Never non-empty while a slot is idle: put() hands a slot to a waiter first.
        self._waiters: deque[asyncio.Future[_Slot]] = deque()

    def put(self, slot: _Slot) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._idle.append(slot)

    async def take(self, *, lowered: bool) -> _Slot:
        if self._idle:
            # The first (longest idle) of the preferred kind, else the first.
            slot = next((s for s in self._idle if s.lowered == lowered), self._idle[0])
            self._idle.remove(slot)
            return slot
        waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.put(waiter.result())  # handed over as the caller gave up: pass it on
            raise


@dataclass
class _Executor:
    """A single-process executor and the tasks submitted to its current process: the
    executor replaces the process after `max_tasks_per_child` of them (a recycle). `nice`: the
    nice value of the process that runs the next task (a new one starts at the pool's)."""

    pool: ProcessPoolExecutor
    max_tasks_per_child: int
    fresh_nice: int
    tasks: int = 0
    nice: int = field(init=False)

    def __post_init__(self) -> None:
        self.nice = self.fresh_nice

    def submit(self, fn: Callable[..., T], nice: int, *args: Any) -> Future[T]:
        future = self.pool.submit(_guarded, nice, fn, *args)
        self.tasks += 1
        if self.tasks == self.max_tasks_per_child:
            self.tasks = 0
            self.nice = self.fresh_nice
            metrics.IMAGING_CHILD_RECYCLES().inc()
        else:
            self.nice = max(self.nice, nice)
        return future


class _Slot:
    """One single-process executor, running one task at a time. Replaced, never repaired."""

    def __init__(self, new_executor: Callable[[], _Executor]) -> None:
        self._new_executor = new_executor
        self._current = new_executor()

    @property
    def executor(self) -> ProcessPoolExecutor:
        return self._current.pool

    @property
    def lowered(self) -> bool:
        """Whether the process that runs the next task is nicer than a fresh one."""
        return self._current.nice > self._current.fresh_nice

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...], nice: int) -> Future[T]:
        """`fn(*args)` in this slot's process, its nice value raised to `nice` first."""
        try:
            return self._current.submit(fn, nice, *args)
        except BrokenProcessPool:
            # Its process died while idle (killed from outside): the task never ran there.
            metrics.IMAGING_CHILD_CRASHES().inc()
            self.reset(kill=False)
            return self._current.submit(fn, nice, *args)

    def reset(self, *, kill: bool) -> None:
        old = self.executor
        if kill:
            _kill_workers(old)
        old.shutdown(wait=False, cancel_futures=True)
        # Its process starts on the next submit: a fork of the warm forkserver, milliseconds.
        self._current = self._new_executor()


def _init_child(
    service_pid: int,
    memory_limit_bytes: int | None,
    max_pixels: int,
    service_name: str,
    log_level: str,
) -> None:
    for sig in _SHUTDOWN_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _exit_with(service_pid)
    setup_logging(service_name, log_level)
    configure_pillow(max_pixels)
    Image.init()  # every codec plugin now: a lazy import later would count against the limit
    if memory_limit_bytes is not None:
        # Soft and hard: the limit cannot be raised again from inside.
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))


def _exit_with(service_pid: int) -> None:
    """Exit when the service process does. A child waits for work on a pipe that it also
    holds open itself, so it would outlive a service killed alone (the OOM killer picks one
    process, not its group) and keep the forkserver alive too."""
    try:
        pidfd = os.pidfd_open(service_pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: the process manager must clean up
        return

    def watch() -> None:
        select.select([pidfd], [], [])  # readable once the process has exited
        os._exit(1)

    threading.Thread(target=watch, name="service-watch", daemon=True).start()


def _ready() -> None:
    """Submitted once per slot at start-up, so that its process exists before the first task."""


def address_space() -> int:
    """This process's virtual memory size in bytes (what RLIMIT_AS limits)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def _guarded(nice: int, fn: Callable[..., T], *args: Any) -> T:
    _lower_priority(nice)
    try:
        return fn(*args)
    except MemoryError:
        # Only this child's own allocations count against its limit, and it runs one task at a
        # time: the image is what needs too much memory.
        raise MemoryLimitExceeded(
            message="processing the image needs more memory than a worker may use"
        ) from None


def _lower_priority(nice: int) -> None:
    """Raise this process's nice value to `nice`, if it is lower. On Linux a nice value belongs
    to a thread, and a new thread takes its creator's: every thread now, the codecs' later."""
    if os.getpriority(os.PRIO_PROCESS, 0) >= nice:
        return
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except FileNotFoundError:  # not Linux: there the call sets the whole process's
        threads = [0]
    try:
        for tid in threads:
            with suppress(ProcessLookupError):  # a thread that has just ended
                os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:  # a sandbox that forbids it: the task runs all the same
        log.warning("could not lower the pipeline process's priority: %s", exc)
        return
    _own_scheduling_group(nice)


# An unprivileged write to /proc/PID/autogroup is refused (EAGAIN) within 100 ms of another one
# anywhere on the machine (kernel/sched/autogroup.c): two slots lowered at once wait their turn.
_AUTOGROUP_TRIES = 10
_AUTOGROUP_RETRY_S = 0.05


def _own_scheduling_group(nice: int) -> None:
    """Leave the service's session, and so its autogroup, for one of this process's own at
    `nice` (see the module doc). Where there is no autogroup (another kernel, the file absent)
    the new session changes nothing else: the child still exits with the service (_exit_with)
    and ignores the signals a process manager sends to the service's group."""
    try:
        os.setsid()
    except OSError as exc:  # already a session leader: not a process forked for a slot
        log.warning("could not give the pipeline process a scheduling group: %s", exc)
        return
    for _ in range(_AUTOGROUP_TRIES):
        try:
            fd = os.open("/proc/self/autogroup", os.O_WRONLY)
        except OSError:  # no autogroup support
            return
        try:
            os.write(fd, str(nice).encode())
            return
        except BlockingIOError:
            time.sleep(_AUTOGROUP_RETRY_S)
        except OSError as exc:
            log.warning("could not lower the pipeline process's scheduling group: %s", exc)
            return
        finally:
            os.close(fd)
    log.warning("could not lower the pipeline process's scheduling group: refused (EAGAIN)")


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    # Python 3.14 has ProcessPoolExecutor.kill_workers(); before it, the processes are only
    # reachable through this private attribute (stable since 3.2).
    processes: dict[int, multiprocessing.process.BaseProcess] = (
        getattr(executor, "_processes", None) or {}
    )
    for process in list(processes.values()):
        process.kill()
