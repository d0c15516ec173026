"""How often `process_folder` lists a running batch's jobs: each listing (with the outputs'
URLs) costs the gateway, the jobs service, Envoy and the client ~20 ms of CPU in all
(BENCHMARKS.md, "The batch's bytes off the gateway"), so a batch is listed a few times while it
runs, so that downloads overlap its processing, not every few seconds."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from pixmesh import _folder, errors
from pixmesh.common.v1.batch_pb2 import Batch, BatchItem
from pixmesh.common.v1.image_pb2 import WEBP
from pixmesh.common.v1.image_pb2 import Image as ImageMessage
from pixmesh.common.v1.job_pb2 import Job, Output

OUTPUT = b"webp bytes"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Batches:
    """A server whose batch's jobs end one per WatchBatch message, a message a second (the
    jobs service's pace), on a clock of its own."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.images: list[str] = []
        self.listings = 0
        self.ended = 0
        self.listed_before_the_end = 0

    async def create_batch(self, image_ids: list[str], *args: Any, **kwargs: Any) -> Batch:
        if not image_ids:
            raise errors.InvalidArgument(
                "no images", violations=[errors.FieldViolation("source.images.image_ids", "empty")]
            )
        self.images = list(image_ids)
        return Batch(batch_id="bat_1", state=Batch.RUNNING)

    async def upload(self, data: bytes, filename: str) -> ImageMessage:
        return ImageMessage(image_id=f"img_{filename}")

    async def watch_batch(self, batch_id: str) -> AsyncIterator[Batch]:
        while self.ended < len(self.images):
            self.clock.now += 1.0
            self.ended += 1
            update = Batch(batch_id=batch_id, state=Batch.RUNNING)
            update.progress.total = len(self.images)
            update.progress.succeeded = self.ended
            yield update

    async def get_batch(self, batch_id: str) -> Batch:
        return Batch(batch_id=batch_id, state=Batch.SUCCEEDED)

    async def list_batch_jobs(self, batch_id: str, **kwargs: Any) -> AsyncIterator[BatchItem]:
        self.listings += 1
        if self.ended < len(self.images):
            self.listed_before_the_end += 1
        for i in range(len(self.images)):
            state = Job.SUCCEEDED if i < self.ended else Job.RUNNING
            item = BatchItem(index=i, job_id=f"job_{i}", state=state)
            if state == Job.SUCCEEDED:
                item.outputs.append(
                    Output(
                        index=0,
                        format=WEBP,
                        size_bytes=len(OUTPUT),
                        sha256=hashlib.sha256(OUTPUT).hexdigest(),
                    )
                )
            yield item

    async def download_output(self, job_id: str, index: int) -> bytes:
        return OUTPUT


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (seed, 0, 0)).save(out, "PNG")
    return out.getvalue()


async def test_a_running_batch_is_listed_a_few_times_not_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 images ending one a second: listed twice while it runs and once at its end (with
    eight ended or five seconds between listings, seven times in all)."""
    clock = _Clock()
    # The folder engine's clock only (the event loop keeps the real one).
    monkeypatch.setattr(_folder, "time", SimpleNamespace(monotonic=clock, time=time.time))
    src, dest = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(32):
        (src / f"p{i:02d}.png").write_bytes(_png(i))
    server = _Batches(clock)
    client: Any = server
    summary = await asyncio.wait_for(_folder.process_folder(client, src, dest, ["grayscale"]), 10)

    assert (summary.succeeded, summary.failed) == (32, 0)
    assert sorted(p.name for p in dest.glob("*.webp")) == [f"p{i:02d}.webp" for i in range(32)]
    assert all((dest / f"p{i:02d}.webp").read_bytes() == OUTPUT for i in range(32))
    # Downloads still overlap the batch's processing: listed before its end, and at it.
    assert server.listed_before_the_end >= 1
    assert server.listings <= 3
