"""Revocation notices between gateway replicas, over NATS core pub/sub: revoked API keys and
deleted image rows.

A replica that revokes or rotates a key publishes the key's sha256 on `KEYS_SUBJECT`; every
replica (itself included) drops it from its key cache, so the next call with that key goes to
Postgres and fails: on every replica within the notice's delivery time (milliseconds), not the
cache's TTL. A replica that deletes image rows publishes their ids on `IMAGES_SUBJECT` the same
way, and every replica drops them from its image rows (services/gateway/image_rows.py). Core
NATS is at-most-once: a replica that was disconnected may have missed notices, so after any
reconnection it forgets every cached key and image row; image rows are kept only while the
subscription is live and the connection up (`listening`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.gateway.auth import KEYS_SUBJECT, Authenticator
from services.gateway.image_rows import IMAGES_SUBJECT, ImageRows

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 2


class Revocations:
    def __init__(
        self, nc: NatsClient, auth: Authenticator, images: ImageRows | None = None
    ) -> None:
        self.nc = nc
        self.auth = auth
        self.images = images
        self._subscribed = False
        self._reconnects = nc.stats["reconnects"]
        if images is not None:
            images.hear_with(self.listening)

    def listening(self) -> bool:
        """Whether notices reach this replica now: subscribed (and the server has the
        subscription) and connected. After a reconnection, first forgets every key and row."""
        if not self._subscribed or not self.nc.is_connected:
            return False
        reconnects = self.nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._forget_all()
        return True

    def _forget_all(self) -> None:
        self.auth.invalidate()
        if self.images is not None:
            self.images.invalidate()

    async def _publish(self, subject: str, data: bytes, what: str) -> None:
        try:
            await self.nc.publish(subject, data)
            await self.nc.flush(timeout=PUBLISH_TIMEOUT_S)
        except Exception:  # committed; other caches expire within their TTL
            log.warning("could not announce %s to other replicas", what, exc_info=True)

    async def announce(self, key_sha256: str) -> None:
        """Drop the key here and tell every other replica to drop it."""
        self.auth.invalidate(key_sha256)
        await self._publish(KEYS_SUBJECT, key_sha256.encode(), "a key revocation")

    async def announce_images(self, image_ids: Sequence[str]) -> None:
        """Drop these (deleted) image rows here and tell every other replica to drop them."""
        if not image_ids:
            return
        if self.images is not None:
            self.images.invalidate(image_ids)
        await self._publish(IMAGES_SUBJECT, ",".join(image_ids).encode(), "deleted images")

    async def run(self, stop: asyncio.Event) -> None:
        """Apply every notice until `stop`; forget all keys and rows after a reconnection."""

        async def on_key(msg: Msg) -> None:
            self.auth.invalidate(msg.data.decode())

        async def on_images(msg: Msg) -> None:
            if self.images is not None:
                self.images.invalidate(msg.data.decode().split(","))

        subs = [
            await self.nc.subscribe(KEYS_SUBJECT, cb=on_key),
            await self.nc.subscribe(IMAGES_SUBJECT, cb=on_images),
        ]
        self._reconnects = self.nc.stats["reconnects"]
        try:
            while not stop.is_set():
                if not self._subscribed:
                    # Rows are kept from when the server has both subscriptions.
                    with contextlib.suppress(Exception):
                        await self.nc.flush(timeout=PUBLISH_TIMEOUT_S)
                        self._forget_all()
                        self._subscribed = True
                self.listening()  # forgets everything after a reconnection
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        finally:
            self._subscribed = False
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
