"""Redis fast path for idempotency keys (Stripe semantics). The jobs service's unique
constraint in Postgres is the backstop, so losing Redis loses speed, not correctness."""

from __future__ import annotations

import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class IdempotencyCache:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    @staticmethod
    def _key(tenant_id: str, key: str) -> str:
        return f"pixmesh:idem:{tenant_id}:{key}"

    async def get(self, tenant_id: str, key: str) -> tuple[str, str] | None:
        """(job_id, request_hash) remembered for this key, if any."""
        try:
            raw = await self.client.get(self._key(tenant_id, key))
        except RedisError:
            log.warning("redis unavailable; idempotency falls back to Postgres")
            return None
        if raw is None:
            return None
        # redis-py types replies as bytes | str (str only with decode_responses=True).
        text = raw if isinstance(raw, str) else raw.decode()
        job_id, _, req_hash = text.partition("|")
        return job_id, req_hash

    async def remember(self, tenant_id: str, key: str, job_id: str, req_hash: str) -> None:
        try:
            await self.client.set(
                self._key(tenant_id, key), f"{job_id}|{req_hash}", ex=self.ttl_s, nx=True
            )
        except RedisError:
            log.warning("redis unavailable; idempotency key not cached")
