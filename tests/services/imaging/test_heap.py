"""malloc settings in the pipeline children (services/imaging/video/heap.py): image jobs reuse
freed memory as a plain Pillow process does; a video job maps its big blocks afresh."""

from collections.abc import AsyncIterator

import pytest

from services.imaging.isolation import IsolationConfig, ProcessPool
from services.imaging.video import heap
from tests.services.imaging import faults

MiB = 1024 * 1024
# A 12 MP photo's decoded pixels come in 16 MiB blocks (Pillow's block size).
BLOCK = 16 * MiB
PAGES = BLOCK // 4096

pytestmark = pytest.mark.skipif(heap._libc() is None, reason="mallopt is glibc's")


@pytest.fixture
async def pool() -> AsyncIterator[ProcessPool]:
    p = ProcessPool(
        IsolationConfig(
            workers=1, memory_limit_bytes=1024 * MiB, max_pixels=50_000_000, interactive_slots=0
        )
    )
    await p.start()
    yield p
    p.close()


async def test_an_image_job_reuses_the_memory_the_last_one_freed(pool: ProcessPool) -> None:
    # With a fixed 1 MiB mmap threshold every block was a fresh mapping: all its pages faulted
    # in (and zeroed by the kernel) again, image after image.
    assert await pool.run(faults.refaulted_pages, BLOCK) < PAGES // 10


async def test_a_video_job_maps_its_blocks_afresh_and_image_jobs_reuse_after_it(
    pool: ProcessPool,
) -> None:
    during, after = await pool.run(faults.refaulted_pages_around_a_video_job, BLOCK)
    assert during >= PAGES * 9 // 10
    assert after < PAGES // 10
    # The next task in the same child too.
    assert await pool.run(faults.refaulted_pages, BLOCK) < PAGES // 10


async def test_a_video_job_starts_by_giving_back_what_image_jobs_left_free(
    pool: ProcessPool,
) -> None:
    # Under the dynamic threshold a freed 16 MiB block stays in the heap for the next image; a
    # video job would otherwise hold it beside its own frames.
    before, inside = await pool.run(faults.rss_around_entering_a_video_job, BLOCK)
    assert before - inside >= BLOCK * 3 // 4, (before, inside)
