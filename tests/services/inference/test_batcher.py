from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.inference.batcher import BatcherClosed, BatchingOptions, DynamicBatcher
from services.inference.stats import ModelStats


class FakeModel:
    """Adds sigma to every pixel; records batch sizes and how many runs overlap."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def run(self, images: np.ndarray, sigmas: np.ndarray | None = None) -> np.ndarray:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append(len(images))
        try:
            time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("boom")
            assert sigmas is not None
            return images + sigmas[:, None, None, None]
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture(scope="module")
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(4)


async def make(model: FakeModel, executor: ThreadPoolExecutor, **opts: float) -> DynamicBatcher:
    batcher = DynamicBatcher(model, executor, ModelStats(), BatchingOptions(**opts))  # type: ignore[arg-type]
    batcher.start()
    return batcher


async def test_concurrent_tiles_share_batches_and_get_their_own_results(
    executor: ThreadPoolExecutor,
) -> None:
    model = FakeModel()
    batcher = await make(model, executor, max_batch_size=4, max_queue_delay_s=0.05)
    tiles = [np.full((8, 8), i, np.float32) for i in range(8)]
    outs = await asyncio.gather(*(batcher.infer(t, sigma=i / 10) for i, t in enumerate(tiles)))
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out, i + i / 10, rtol=1e-6)
    assert model.batches == [4, 4]
    assert batcher.stats.executions == 2 and batcher.stats.inferences == 8
    assert batcher.stats.batch_sizes[4].count == 2
    assert batcher.stats.queue.count == 8
    await batcher.close()


async def test_a_lone_tile_waits_at_most_the_queue_delay(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    batcher = await make(model, executor, max_batch_size=8, max_queue_delay_s=0.03)
    started = time.monotonic()
    await batcher.infer(np.zeros((4, 4), np.float32))
    waited = time.monotonic() - started
    assert 0.025 <= waited < 0.5
    assert model.batches == [1]
    await batcher.close()


async def test_tiles_of_different_shapes_are_not_stacked(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    batcher = await make(model, executor, max_batch_size=4, max_queue_delay_s=0.02)
    shapes = [(8, 8), (8, 8), (6, 10), (8, 8), (6, 10)]
    outs = await asyncio.gather(*(batcher.infer(np.zeros(s, np.float32)) for s in shapes))
    assert [o.shape for o in outs] == shapes
    assert sorted(model.batches) == [2, 3]
    await batcher.close()


async def test_concurrency_limit_per_model(executor: ThreadPoolExecutor) -> None:
    model = FakeModel(delay=0.02)
    batcher = await make(model, executor, max_batch_size=1, max_queue_delay_s=0, max_concurrency=2)
    await asyncio.gather(*(batcher.infer(np.zeros((4, 4), np.float32)) for _ in range(8)))
    assert model.most_running == 2
    await batcher.close()


async def test_a_failed_batch_fails_its_tiles_only(executor: ThreadPoolExecutor) -> None:
    model = FakeModel(fail=True)
    batcher = await make(model, executor, max_batch_size=2, max_queue_delay_s=0.01)
    results = await asyncio.gather(
        *(batcher.infer(np.zeros((4, 4), np.float32)) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert batcher.stats.failed_executions == 2
    model.fail = False
    out = await batcher.infer(np.zeros((4, 4), np.float32), sigma=1.0)
    assert float(out.max()) == 1.0
    await batcher.close()


async def test_close_drains_queued_tiles_then_refuses_new_ones(
    executor: ThreadPoolExecutor,
) -> None:
    model = FakeModel(delay=0.02)
    batcher = await make(model, executor, max_batch_size=2, max_queue_delay_s=0.001)
    pending = [asyncio.create_task(batcher.infer(np.zeros((4, 4), np.float32))) for _ in range(5)]
    await asyncio.sleep(0)
    await batcher.close()
    assert all(t.done() and t.exception() is None for t in pending)
    with pytest.raises(BatcherClosed):
        await batcher.infer(np.zeros((4, 4), np.float32))


async def test_the_queue_is_bounded(executor: ThreadPoolExecutor) -> None:
    model = FakeModel(delay=0.05)
    batcher = await make(model, executor, max_batch_size=1, max_queue_delay_s=0, max_queue=2)
    tasks = [asyncio.create_task(batcher.infer(np.zeros((4, 4), np.float32))) for _ in range(6)]
    await asyncio.sleep(0.01)
    assert batcher.queued <= 2
    await asyncio.gather(*tasks)
    await batcher.close()
