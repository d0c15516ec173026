"""The imaging pool's lanes alone (issue 12): how long a small interactive task takes while batch
tasks fill the workers, by PIXMESH_WORKER_BATCH_NICE. It prints figures, it does not pass or fail.
Results: BENCHMARKS.md ("Bulk").

    .venv/bin/python -m bench.lanes                    # batch_nice 0, 10, 19, 19, 10, 0
    .venv/bin/python -m bench.lanes --nice 0 10 --seconds 20

One ProcessPool (services/imaging/isolation.py) per round, configured as the imaging worker is
(`workers` = the cores, one interactive slot, the same preload and memory limit), in this process:
no mesh, so the figures are the pipeline processes' share of the cores and nothing else. The
interactive task: a 640x480 photo-like JPEG -> 320 px wide WebP (bench/batch.py's interactive
job); a batch task: a 6 MP one -> WebP q80 (Pillow, in the pool's children). A round runs
interactive tasks one after another for `--seconds` / 2 on the idle pool (after one not counted),
then `workers` batch-lane loops fill the workers and interactive tasks run again for `--seconds`;
figures: the interactive p50/p95 idle and during the batch (wall time from the caller, slot wait
included), and the batch images per second over that window. Rounds alternate the nice values
so that a drift of the machine's load falls on each. Last, what a lowered process costs an
interactive task that finds no other slot idle (a fresh process takes its place): one slot, the
same interactive task after a batch task and after an interactive one, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from collections.abc import Sequence

from PIL import Image

from services.imaging.isolation import IsolationConfig, ProcessPool
from services.runtime.lanes import BATCH_LANE, LANE


def convert(data: bytes, width: int | None) -> int:
    """Run in a pipeline process: decode, optionally shrink to `width`, WebP q80 method 4."""
    with Image.open(io.BytesIO(data)) as source:
        img = source.convert("RGB")
    if width is not None:
        img.thumbnail((width, width * 10))
    out = io.BytesIO()
    img.save(out, "WEBP", quality=80, method=4)
    return len(out.getvalue())


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def interactive_for(pool: ProcessPool, small: bytes, seconds: float) -> list[float]:
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        await pool.run(convert, small, 320)
        times.append(time.perf_counter() - start)
    return times


async def one_round(
    nice: int, workers: int, small: bytes, big: bytes, seconds: float
) -> tuple[list[float], list[float], float]:
    pool = ProcessPool(
        IsolationConfig(
            workers=workers,
            memory_limit_bytes=1024 * 1024 * 1024,
            max_pixels=50_000_000,
            interactive_slots=1,
            batch_nice=nice,
        )
    )
    await pool.start()
    done: list[float] = []
    stop = asyncio.Event()

    async def batch_loop() -> None:
        LANE.set(BATCH_LANE)  # this task's own context, as the Consumer's batch lane sets it
        while not stop.is_set():
            await pool.run(convert, big, None)
            done.append(time.monotonic())

    try:
        await pool.run(convert, small, 320)  # not counted
        idle = await interactive_for(pool, small, seconds / 2)
        loops = [asyncio.create_task(batch_loop()) for _ in range(workers)]
        await asyncio.sleep(1.0)  # the batch under way
        start = time.monotonic()
        busy = await interactive_for(pool, small, seconds)
        end = time.monotonic()
        stop.set()
        await asyncio.gather(*loops)
    finally:
        pool.close()
    rate = sum(1 for t in done if start <= t <= end) / (end - start)
    return idle, busy, rate


async def fresh_process_cost(small: bytes, rounds: int) -> tuple[list[float], list[float]]:
    pool = ProcessPool(
        IsolationConfig(workers=1, memory_limit_bytes=1024 * 1024 * 1024, max_pixels=50_000_000)
    )
    await pool.start()

    async def batch() -> None:
        LANE.set(BATCH_LANE)
        await pool.run(convert, small, 320)

    async def timed() -> float:
        start = time.perf_counter()
        await pool.run(convert, small, 320)
        return time.perf_counter() - start

    after_batch, after_interactive = [], []
    try:
        await pool.run(convert, small, 320)  # not counted
        for _ in range(rounds):
            await asyncio.create_task(batch())
            after_batch.append(await timed())  # a fresh process in the lowered one's place
            after_interactive.append(await timed())  # the same process again
    finally:
        pool.close()
    return after_batch, after_interactive


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nice", type=int, nargs="+", default=[0, 10, 19, 19, 10, 0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    from bench.imaging import photo

    workers = len(os.sched_getaffinity(0))
    small = photo((640, 480), seed=10_000)
    big = photo((2828, 2121), seed=1)
    print(f"{workers} workers + 1 interactive slot, load {os.getloadavg()}")
    for nice in args.nice:
        idle, busy, rate = asyncio.run(one_round(nice, workers, small, big, args.seconds))
        print(
            f"batch_nice {nice:2d}: interactive idle p50 {statistics.median(idle) * 1000:.0f} ms "
            f"p95 {pct(idle, 0.95) * 1000:.0f} ms ({len(idle)}); during the batch p50 "
            f"{statistics.median(busy) * 1000:.0f} ms p95 {pct(busy, 0.95) * 1000:.0f} ms "
            f"({len(busy)}); p95 x{pct(busy, 0.95) / pct(idle, 0.95):.2f}; "
            f"batch {rate:.2f} images/s; load {os.getloadavg()[0]:.2f}"
        )
    fresh, warm = asyncio.run(fresh_process_cost(small, 20))
    print(
        f"an interactive task in a fresh process (after a batch task in its slot): p50 "
        f"{statistics.median(fresh) * 1000:.1f} ms p95 {pct(fresh, 0.95) * 1000:.1f} ms; in a warm "
        f"one: p50 {statistics.median(warm) * 1000:.1f} ms p95 {pct(warm, 0.95) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
