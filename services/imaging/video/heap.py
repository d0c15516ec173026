"""glibc malloc settings for a video job in a pipeline child, and handing freed memory back after it.

A video job allocates frame-sized buffers (a 4K frame is 12 MB in YUV, 25 MB in packed RGB, 33 MB
in Pillow) from FFmpeg's decoder threads and from Pillow. glibc's default mmap threshold is
dynamic: once a block of 25 MB has been freed, blocks up to 32 MB come from the heap instead of
their own mappings, where they fragment and stay in the process's RSS after the job. A fixed
threshold keeps every block over `MMAP_THRESHOLD` in a mapping of its own, unmapped when freed;
`trim` then gives back what small-object churn left free in the heaps. Measured on the 4K bench
clip (BENCHMARKS.md, Video, third pass): peak RSS of a child 320 -> 300 MiB, and 116 MiB after
the job instead of 213-256 MiB.

Only for a video job (`video_job`): an image job is better served by the dynamic threshold, as
the bare Pillow loop is. A photo's decoded pixels (16 MB blocks) and libwebp's picture (18 MB for
12 MP) are the same sizes from one image to the next, so after the first, glibc serves them from
heap memory that is already mapped; with the fixed threshold every one of them was a fresh
mapping whose pages the kernel faulted in and zeroed again for each image (BENCHMARKS.md, "The
pipeline child per image, seventh pass": system time and page faults per image). After a video
job the child goes on with `IMAGE_MMAP_THRESHOLD` and `IMAGE_TRIM_THRESHOLD`, the most that
glibc's dynamic settings reach on their own (mallopt cannot switch them back to dynamic).

No-ops where the C library is not glibc (mallopt and malloc_trim are glibc's).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks of this size and more get a mapping of their own during a video job: a 1080p frame's
# luma plane (2 MB) and every Pillow image block (16 MB) are over it; Python's small objects are
# far below it.
MMAP_THRESHOLD = 1 << 20
# After a video job: glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit (the highest its dynamic
# threshold goes) and twice it for the trim threshold, as the dynamic adjustment sets them.
IMAGE_MMAP_THRESHOLD = 32 << 20
IMAGE_TRIM_THRESHOLD = 2 * IMAGE_MMAP_THRESHOLD


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def video_job() -> Iterator[None]:
    """Around a video job: what image jobs left free in the heap back to the OS first (under
    the dynamic threshold their freed pixel blocks stay mapped for the next image; a video job
    would hold them beside its own frames), the fixed mmap threshold while it runs (see the
    module doc), then its freed memory back to the OS (`trim`) and the image settings for the
    jobs after it."""
    trim()
    tune()
    try:
        yield
    finally:
        trim()
        _mallopt(_M_MMAP_THRESHOLD, IMAGE_MMAP_THRESHOLD)
        _mallopt(_M_TRIM_THRESHOLD, IMAGE_TRIM_THRESHOLD)


def tune() -> None:
    """Fix the mmap threshold at MMAP_THRESHOLD (see the module doc)."""
    _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim() -> None:
    """Give the free memory of every malloc arena back to the OS (a few milliseconds)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _mallopt(param: int, value: int) -> None:
    libc = _libc()
    if libc is not None:
        libc.mallopt(param, value)
