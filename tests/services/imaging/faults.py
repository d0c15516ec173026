"""Functions the isolation tests run in child processes: module-level so that they pickle by
name, and test-only so that no fault hook exists in the service itself."""

from __future__ import annotations

import os
import signal
import time


def pid() -> int:
    return os.getpid()


def nap(seconds: float) -> int:
    """Sleep, then return the pid: a task that is still running when a neighbour crashes."""
    time.sleep(seconds)
    return os.getpid()


def crash(how: str) -> None:
    """Die the way a broken decoder does."""
    if how == "abort":
        os.abort()  # SIGABRT, like a failed assertion in C code
    if how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "exit":
        os._exit(70)
    raise ValueError(how)


def allocate(nbytes: int) -> int:
    return len(bytearray(nbytes))


def rlimit_as() -> tuple[int, int]:
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)


def boom() -> None:
    raise KeyError("a bug, not bad input")


def late() -> None:
    """What the pipeline raises when the deadline passes between two steps."""
    from services.runtime.errors import DeadlineExceeded

    raise DeadlineExceeded(message="the deadline passed before the encode step")


def priority() -> tuple[int, int]:
    """The pid and the nice value of the thread running the task."""
    return os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)


def nap_priority(seconds: float) -> tuple[int, int]:
    time.sleep(seconds)
    return priority()


def refaulted_pages(nbytes: int) -> int:
    """Pages the kernel faults in for a block of `nbytes` allocated and written after blocks of
    the same size were allocated and freed twice (a photo's pixels, image after image; glibc's
    dynamic threshold maps the first and takes the second from the heap): ~0 when malloc
    reuses the freed memory, every page of it when each block is a fresh mapping."""
    import ctypes
    import resource

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    faults = 0
    for _ in range(3):
        block = libc.malloc(nbytes)
        assert block
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        libc.memset(block, 1, nbytes)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        libc.free(block)
    return faults


def refaulted_pages_around_a_video_job(nbytes: int) -> tuple[int, int]:
    """`refaulted_pages` during a video job's malloc settings, and after them."""
    from services.imaging.video import heap

    with heap.video_job():
        during = refaulted_pages(nbytes)
    return during, refaulted_pages(nbytes)


def rss_around_entering_a_video_job(nbytes: int) -> tuple[int, int]:
    """The process's resident bytes after image-like blocks of `nbytes` were freed (kept in the
    heap for the next image), and just inside a video job's malloc settings."""
    import os

    from services.imaging.video import heap

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    refaulted_pages(nbytes)
    before = rss()
    with heap.video_job():
        inside = rss()
    return before, inside


def scheduling_group() -> tuple[int, int, str]:
    """The pid, the session id and the autogroup (its name and nice value, as
    /proc/self/autogroup reads: "/autogroup-123 nice 5") of the process running the task."""
    with open("/proc/self/autogroup") as f:
        return os.getpid(), os.getsid(0), f.read().strip()
