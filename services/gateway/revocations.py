"""Revocation notices between gateway replicas, over NATS core pub/sub.

A replica that revokes or rotates a key publishes the key's sha256 on `KEYS_SUBJECT`; every
replica (itself included) drops it from its key cache, so the next call with that key goes to
Postgres and fails: on every replica within the notice's delivery time (milliseconds), not the
cache's TTL. Core NATS is at-most-once: a replica that was disconnected may have missed
notices, so after any reconnection it forgets every cached key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.gateway.auth import KEYS_SUBJECT, Authenticator

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 2


class Revocations:
    def __init__(self, nc: NatsClient, auth: Authenticator) -> None:
        self.nc = nc
        self.auth = auth

    async def announce(self, key_sha256: str) -> None:
        """Drop the key here and tell every other replica to drop it."""
        self.auth.invalidate(key_sha256)
        try:
            await self.nc.publish(KEYS_SUBJECT, key_sha256.encode())
            await self.nc.flush(timeout=PUBLISH_TIMEOUT_S)
        except Exception:  # the revocation is committed; other caches expire within their TTL
            log.warning("could not announce a key revocation to other replicas", exc_info=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Apply every notice until `stop`; forget all keys after a reconnection."""

        async def on_notice(msg: Msg) -> None:
            self.auth.invalidate(msg.data.decode())

        sub = await self.nc.subscribe(KEYS_SUBJECT, cb=on_notice)
        reconnects = self.nc.stats["reconnects"]
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
                if self.nc.stats["reconnects"] != reconnects:
                    reconnects = self.nc.stats["reconnects"]
                    self.auth.invalidate()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
