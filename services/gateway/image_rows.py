"""The image rows a replica has read, kept so that a CreateJob (or GetImage, PlanJob) need not
read its image from Postgres again: one SELECT and its span less per request (BENCHMARKS.md,
"The hot path, eighth pass").

An image row never changes once written but for two things, and neither can be served stale:
- **deletion** (DeleteImage, retention, tenant erasure: all through
  `GatewayRepository.delete_images`). The replica that deleted rows drops them here and
  announces their ids on `IMAGES_SUBJECT`, over the notices API-key revocations use
  (services/gateway/revocations.py); every replica drops them when the notice arrives. A row
  is kept only while those notices can be heard: from the moment the subscription is live,
  never while the connection to NATS is down, and everything kept is dropped after a
  reconnection (notices are at-most-once). A read that a deletion overtook (the SELECT saw the
  row, the notice came before it answered) is not kept: a generation counter that every
  invalidation moves.
- **the orientation** of a row recorded before orientations were kept (NULL), filled in by a
  later upload of the same bytes (`GatewayRepository.save_image`): such rows are not kept.

Entries also end after `ttl_s` (the API keys' `cache_ttl_s`), a bound should a notice be lost
without a reconnection. A caller gets its own copy of a kept row.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from cachetools import TTLCache

from pixmesh.common.v1 import image_pb2

# NATS core subject on which a gateway announces the ids of image rows it deleted (comma-separated).
IMAGES_SUBJECT = "pixmesh.gateway.images.deleted"

# The most rows one replica keeps (a row is ~0.5-1 KB): far more images than a deployment's jobs
# name within a TTL, and a bound on memory.
CACHE_SIZE = 10_000

Read = Callable[[], Awaitable[image_pb2.Image | None]]


def _deaf() -> bool:
    return False


class ImageRows:
    def __init__(
        self,
        ttl_s: float,
        maxsize: int = CACHE_SIZE,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rows: TTLCache[str, tuple[str, image_pb2.Image]] | None = (
            TTLCache(maxsize, ttl_s, timer) if ttl_s > 0 else None
        )
        # Moves with every invalidation: a read that began under another generation is not kept.
        self._generation = 0
        # Whether deletion notices are heard now (Revocations.listening): until it says so,
        # nothing is kept.
        self._hearing: Callable[[], bool] = _deaf

    def hear_with(self, hearing: Callable[[], bool]) -> None:
        """Keep rows only while `hearing()` (which may invalidate everything first)."""
        self._hearing = hearing

    def __len__(self) -> int:
        return 0 if self._rows is None else len(self._rows)

    async def get(self, tenant_id: str, image_id: str, read: Read) -> image_pb2.Image | None:
        """The tenant's image `image_id`: a copy of the kept row, else `read()` (kept if it may
        be)."""
        if self._rows is None or not self._hearing():
            return await read()
        kept = self._rows.get(image_id)
        if kept is not None and kept[0] == tenant_id:
            return _copy(kept[1])
        generation = self._generation
        image = await read()
        if image is not None:
            self.remember(tenant_id, image, generation)
        return image

    def generation(self) -> int:
        """Pass to `remember` for a row read after this call."""
        return self._generation

    def remember(self, tenant_id: str, image: image_pb2.Image, generation: int) -> None:
        """Keep `image` (read after `generation()` returned `generation`), unless an
        invalidation came since, notices are not heard, or its orientation may still change."""
        if (
            self._rows is None
            or not image.orientation  # NULL: a later upload of the same bytes may fill it in
            or not self._hearing()  # may invalidate (a reconnection), moving the generation
            or generation != self._generation
        ):
            return
        self._rows[image.image_id] = (tenant_id, _copy(image))

    def invalidate(self, image_ids: Iterable[str] | None = None) -> None:
        """Forget these rows (by image id), or every row."""
        self._generation += 1
        if self._rows is None:
            return
        if image_ids is None:
            self._rows.clear()
            return
        for image_id in image_ids:
            self._rows.pop(image_id, None)


def _copy(image: image_pb2.Image) -> image_pb2.Image:
    copy = image_pb2.Image()
    copy.CopyFrom(image)
    return copy
