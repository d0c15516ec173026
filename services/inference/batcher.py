"""A dynamic batcher per model, after Triton's: tiles from concurrent tasks share one run.

A tile waits until `max_batch_size` tiles of its shape are queued or `max_queue_delay` has passed
since the oldest one arrived, whichever comes first; at most `max_concurrency` batches of the
model run at once (Triton's instance count), on the injected bounded executor. The queue holds
at most `max_queue` tiles: past that, `infer` waits (backpressure reaches the task consumer,
which stops fetching), so memory stays bounded whatever the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from services.inference.stats import ModelStats
from services.runtime import metrics
from services.runtime.errors import Unavailable

log = logging.getLogger(__name__)


class Model(Protocol):
    def run(self, images: np.ndarray, sigmas: np.ndarray | None = None) -> np.ndarray: ...


class BatcherClosed(Unavailable):
    """The model was unloaded (or replaced) under a request; a retry gets the current one."""

    def __init__(self) -> None:
        super().__init__(message="the model is being unloaded", reason="MODEL_UNLOADING")


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 4
    max_queue_delay_s: float = 0.002
    max_concurrency: int = 1
    max_queue: int = 64

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_concurrency < 1 or self.max_queue < 1:
            raise ValueError("batch size, concurrency and queue length must be positive")
        if self.max_queue_delay_s < 0:
            raise ValueError("max_queue_delay_s must not be negative")


@dataclass
class _Request:
    image: np.ndarray  # (H, W) float32 on [0, 1]
    sigma: float  # [0, 1] scale; ignored by blind models
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    def __init__(
        self, model: Model, executor: Executor, stats: ModelStats, options: BatchingOptions
    ) -> None:
        self.model = model
        self.executor = executor
        self.stats = stats
        self.options = options
        self._queue: deque[_Request] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Semaphore(options.max_queue)
        self._slots = asyncio.Semaphore(options.max_concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._dispatch(), name="batcher")

    async def infer(self, image: np.ndarray, sigma: float = 0.0) -> np.ndarray:
        """Denoise one (H, W) tile; returns the (H, W) result."""
        if self._closed:
            raise BatcherClosed()
        await self._room.acquire()
        if self._closed:
            self._room.release()
            raise BatcherClosed()
        request = _Request(image, sigma, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._arrived.set()
        return await request.future

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def close(self) -> None:
        """Refuse new tiles, let queued and running batches finish, stop the dispatcher."""
        self._closed = True
        while self._queue or self._running:
            self._arrived.set()
            await asyncio.sleep(0.005)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    # ---- internals ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            # A free instance first: while all are busy, more tiles join the next batch.
            await self._slots.acquire()
            try:
                batch = await self._form_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _form_batch(self) -> list[_Request]:
        opts = self.options
        first = self._queue[0]
        shape = first.image.shape
        while not self._closed:
            same = sum(1 for r in self._queue if r.image.shape == shape)
            remaining = first.enqueued + opts.max_queue_delay_s - time.monotonic()
            if same >= opts.max_batch_size or remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        batch: list[_Request] = []
        kept: deque[_Request] = deque()
        while self._queue:
            r = self._queue.popleft()
            if r.future.done():  # its task was cancelled while it waited
                self._room.release()
            elif len(batch) < opts.max_batch_size and r.image.shape == shape:
                batch.append(r)
                self._room.release()
            else:
                kept.append(r)
        self._queue = kept
        return batch

    async def _execute(self, batch: Sequence[_Request]) -> None:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        delay = metrics.INFERENCE_QUEUE_DELAY()
        for r in batch:
            self.stats.queue.observe(start - r.enqueued)
            delay.observe(start - r.enqueued)
        metrics.INFERENCE_BATCH_SIZE().observe(len(batch))
        try:
            out = await loop.run_in_executor(self.executor, _run, self.model, batch)
        except Exception as exc:
            self.stats.failed_executions += 1
            log.exception("batch failed", extra={"batch_size": len(batch)})
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
        else:
            self.stats.record_batch(len(batch), time.monotonic() - start, time.time())
            for i, r in enumerate(batch):
                if not r.future.done():
                    r.future.set_result(out[i, 0])
        finally:
            self._slots.release()


def _run(model: Model, batch: Sequence[_Request]) -> np.ndarray:
    # Stacking copies every tile: done here, off the event loop.
    images = np.stack([r.image for r in batch])[:, None]
    sigmas = np.array([r.sigma for r in batch], np.float32)
    return model.run(images, sigmas)
