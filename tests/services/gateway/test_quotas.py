"""Tenant limits against the real Valkey: the per-key rate (exact across two gateway
instances hitting at once for small limits; leased in blocks, within the documented bound,
for larger ones), the daily job count, running jobs, stored bytes, usage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as redis

from services.gateway.auth import SCOPES, Principal
from services.gateway.quotas import BLOCK_SHARE, Limits, Quotas, limits_from
from services.runtime.errors import ResourceExhausted

pytestmark = pytest.mark.integration


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def quotas(
    redis_url: str, cache: redis.Redis, limits: Limits, running: int = 0, **kw: float
) -> Quotas:
    async def limits_of(tenant: str) -> Limits:
        return limits

    async def running_jobs(tenant: str, stop: int) -> int:
        return min(running, stop)

    async def stored(tenant: str) -> int:
        return 900

    return Quotas(redis_url, cache, limits_of, running_jobs, stored, cache_ttl_s=30, **kw)


def count_hits(q: Quotas) -> list[int]:
    """Records the cost of every hit the replica sends to Valkey's window."""
    costs: list[int] = []
    hit = q.allowances.limiter.hit

    async def counted(item: object, *ids: str, cost: int = 1) -> bool:
        costs.append(cost)
        return await hit(item, *ids, cost=cost)  # type: ignore[arg-type]

    q.allowances.limiter.hit = counted  # type: ignore[method-assign]
    return costs


async def admitted(q: Quotas, caller: Principal) -> bool:
    try:
        await q.check_request(caller)
    except ResourceExhausted as exc:
        assert exc.reason == "RATE_LIMITED"
        return False
    return True


async def test_a_busy_key_costs_one_round_trip_per_block_and_every_request_is_counted(
    redis_url: str, cache: redis.Redis
) -> None:
    limit = 500
    q = quotas(redis_url, cache, Limits(requests_per_second=limit))
    costs = count_hits(q)
    caller = principal()
    results = [await admitted(q, caller) for _ in range(100)]
    assert all(results)
    # Blocks grow to the key's pace (at most limit / BLOCK_SHARE): not a round trip each.
    assert len(costs) <= 100 // 5, costs
    assert max(costs) <= limit // BLOCK_SHARE
    # The window holds every admitted request (and no more than one block's spare).
    usage = {u.name: u for u in (await q.usage(caller)).quotas}
    assert 100 <= usage["requests_per_second"].used == sum(costs) < 100 + limit // BLOCK_SHARE


async def test_leased_blocks_keep_a_burst_within_the_limit_across_replicas(
    redis_url: str, cache: redis.Redis
) -> None:
    limit = 100  # blocks of at most 5
    replicas = [quotas(redis_url, cache, Limits(requests_per_second=limit)) for _ in range(2)]
    costs = [count_hits(q) for q in replicas]
    caller = principal()
    results = await asyncio.gather(*(admitted(replicas[i % 2], caller) for i in range(400)))
    # Every admitted request was counted in the window, so a burst never passes the limit;
    # what the replicas still hold unspent (at most a block less one each) may go unserved.
    block = limit // BLOCK_SHARE
    assert limit - 2 * (block - 1) <= sum(results) <= limit
    assert sum(len(c) for c in costs) < 400 // 2
    # Once refused, a replica refuses the key without a round trip until the window frees.
    before = [len(c) for c in costs]
    for q in replicas:
        assert not await admitted(q, caller)
    assert [len(c) for c in costs] == before
    with pytest.raises(ResourceExhausted) as refused:
        await replicas[0].check_request(caller)
    assert refused.value.retry_delay is not None and 0 < refused.value.retry_delay <= 1.0
    await asyncio.sleep(refused.value.retry_delay + 0.05)
    assert await admitted(replicas[0], caller)


async def test_a_leased_block_lapses_after_the_lease(redis_url: str, cache: redis.Redis) -> None:
    q = quotas(redis_url, cache, Limits(requests_per_second=500), lease_s=0.1)
    costs = count_hits(q)
    caller = principal()
    for _ in range(30):
        assert await admitted(q, caller)
    assert costs[-1] > 1  # a block
    n = len(costs)
    await asyncio.sleep(0.15)  # its unspent requests are no longer spent
    assert await admitted(q, caller)
    assert len(costs) == n + 1


async def test_without_leases_every_request_is_a_round_trip(
    redis_url: str, cache: redis.Redis
) -> None:
    q = quotas(redis_url, cache, Limits(requests_per_second=500), lease_s=0)
    costs = count_hits(q)
    caller = principal()
    for _ in range(20):
        assert await admitted(q, caller)
    assert costs == [1] * 20


def principal(key_id: str | None = None) -> Principal:
    return Principal(f"t-{uuid.uuid4().hex[:8]}", key_id or f"key_{uuid.uuid4().hex}", SCOPES)


async def test_rate_per_key_is_exact_across_instances(redis_url: str, cache: redis.Redis) -> None:
    limits = Limits(requests_per_second=5)
    replicas = [quotas(redis_url, cache, limits) for _ in range(2)]
    caller = principal()

    async def one(i: int) -> ResourceExhausted | None:
        try:
            await replicas[i % 2].check_request(caller)
        except ResourceExhausted as exc:
            return exc
        return None

    results = await asyncio.gather(*(one(i) for i in range(20)))
    refused = [r for r in results if r is not None]
    assert len(refused) == 15
    err = refused[0]
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.reason == "RATE_LIMITED"
    assert err.retry_delay is not None and 0 < err.retry_delay <= 1.0
    # Another key (another tenant) is not affected.
    await replicas[0].check_request(principal())
    usage = {q.name: q for q in (await replicas[1].usage(caller)).quotas}
    assert (usage["requests_per_second"].used, usage["requests_per_second"].limit) == (5, 5)
    # The window moves on: after the advised wait the key is served again.
    await asyncio.sleep(err.retry_delay + 0.05)
    await replicas[1].check_request(caller)


async def test_jobs_per_day_counts_creations_and_gives_back_failures(
    redis_url: str, cache: redis.Redis
) -> None:
    q = quotas(redis_url, cache, Limits(jobs_per_day=2))
    tenant = principal().tenant_id
    async with q.job(tenant):
        pass
    with pytest.raises(RuntimeError):
        async with q.job(tenant):
            raise RuntimeError("CreateJob failed")  # not counted
    async with q.job(tenant):
        pass
    with pytest.raises(ResourceExhausted) as info:
        async with q.job(tenant):
            raise AssertionError("not reached")
    assert info.value.reason == "QUOTA_EXCEEDED"
    assert info.value.metadata == {"quota": "jobs_per_day", "limit": "2"}
    assert info.value.retry_delay is not None and 0 < info.value.retry_delay <= 24 * 3600
    usage = {
        x.name: (x.used, x.limit) for x in (await q.usage(Principal(tenant, "k", SCOPES))).quotas
    }
    assert usage["jobs_per_day"] == (2, 2)


async def test_running_jobs_and_storage(redis_url: str, cache: redis.Redis) -> None:
    q = quotas(redis_url, cache, Limits(running_jobs=3, stored_bytes=1000), running=3)
    tenant = principal().tenant_id
    with pytest.raises(ResourceExhausted) as info:
        async with q.job(tenant):
            raise AssertionError("not reached")
    assert info.value.metadata["quota"] == "running_jobs"
    await q.check_storage(tenant, 100)  # 900 stored + 100 = the limit
    with pytest.raises(ResourceExhausted) as full:
        await q.check_storage(tenant, 101)
    assert full.value.metadata["quota"] == "stored_bytes" and not full.value.retryable
    assert full.value.retry_delay is None


async def test_unlimited_touches_nothing(redis_url: str, cache: redis.Redis) -> None:
    q = quotas(redis_url, cache, Limits())
    for _ in range(50):
        await q.check_request(principal("key_same"))
    async with q.job("t"):
        pass


def test_limits_from_prefers_the_tenants_own() -> None:
    defaults = Limits(requests_per_second=500, running_jobs=0, jobs_per_day=0, stored_bytes=7)
    own = {"requests_per_second": 2, "running_jobs": None, "jobs_per_day": 0, "stored_bytes": None}
    assert limits_from(defaults, own) == Limits(2, 0, 0, 7)
