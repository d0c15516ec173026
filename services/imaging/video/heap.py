"""glibc malloc settings for the pipeline children, and handing freed memory back after a video job.

A video job allocates frame-sized buffers (a 4K frame is 12 MB in YUV, 25 MB in packed RGB, 33 MB
in Pillow) from FFmpeg's decoder threads and from Pillow. glibc's default mmap threshold is
dynamic: once a block of 25 MB has been freed, blocks up to 32 MB come from the heap instead of
their own mappings, where they fragment and stay in the process's RSS after the job. A fixed
threshold keeps every block over `MMAP_THRESHOLD` in a mapping of its own, unmapped when freed;
`trim` then gives back what small-object churn left free in the heaps. Measured on the 4K bench
clip (BENCHMARKS.md, Video, third pass): peak RSS of a child 320 -> 300 MiB, and 116 MiB after
the job instead of 213-256 MiB.

No-ops where the C library is not glibc (mallopt and malloc_trim are glibc's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters (glibc's malloc.h).
_M_MMAP_THRESHOLD = -3
# Blocks of this size and more get a mapping of their own: a 1080p frame's luma plane (2 MB)
# and every Pillow image block (16 MB) are over it; Python's small objects are far below it.
MMAP_THRESHOLD = 1 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune() -> None:
    """Fix the mmap threshold (see the module doc); call once per process, before the work."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim() -> None:
    """Give the free memory of every malloc arena back to the OS (a few milliseconds)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
