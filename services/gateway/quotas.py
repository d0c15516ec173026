"""Per-tenant limits: requests per second per key, running jobs, jobs per day, stored bytes.

- Requests per second: a moving window per API key in Valkey, from the `limits` library
  (its Redis storage keeps the window in a sorted list updated by one Lua script, so replicas
  hitting one key at once are counted exactly; a token bucket or GCRA library with a redis-py
  asyncio backend was not found among well-kept packages). Over it: RESOURCE_EXHAUSTED
  RATE_LIMITED with RetryInfo = when the oldest request leaves the window (HTTP 429 and
  `Retry-After`). A replica leases a key's allowance in blocks (`Allowances`): one hit of cost
  n in the window buys n requests spent locally for `LEASE_S`, so a busy key costs one round
  trip per block, not per request (neither `limits` nor pyrate-limiter lease a shared limit
  locally: both take one storage round trip per hit). The bound is in `Allowances`' doc.
- Jobs per day: one Valkey counter per tenant and UTC day, INCR before the job is created
  (atomic across replicas; given back when the creation fails).
- Running jobs: the tenant's PENDING and RUNNING jobs, counted by the jobs service (the source of
  truth). Two creations racing at the limit may both pass: the bound is the limit plus the
  creations in flight at that instant.
- Stored bytes: the sum of the tenant's uploads (gateway.images), checked before an upload.

Limits come from gateway.tenants (per tenant, NULL: the default from settings; 0: unlimited)
and are cached for `cache_ttl_s`. With Valkey down the rate and daily checks let requests
through (logged): availability of reads and uploads over exact limits for that while.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as redis
from cachetools import LRUCache
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh.common.v1 import job_pb2
from pixmesh.gateway.v1 import gateway_pb2 as pb
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.gateway.auth import Principal
from services.runtime.errors import ResourceExhausted, rpc_errors

log = logging.getLogger(__name__)

DAY_TTL_S = 2 * 24 * 3600

# How long a leased block of a key's allowance may be spent (well inside the 1 s window, so
# that a block's hits count in the window its requests are served in), and the largest block
# as a share of the key's limit: keys limited below 2 x BLOCK_SHARE requests per second are
# counted one request at a time, exactly as without leases.
LEASE_S = 0.25
BLOCK_SHARE = 20
# Keys whose allowance a replica remembers (the least recently used is dropped: its unspent
# hits stay counted until they leave the window, nothing more).
ALLOWANCE_KEYS = 10_000


@dataclass(frozen=True)
class Limits:
    """A tenant's ceilings; 0 means unlimited."""

    requests_per_second: int = 0
    running_jobs: int = 0
    jobs_per_day: int = 0
    stored_bytes: int = 0


# tenant -> its limits (settings defaults merged with its row)
LimitsOf = Callable[[str], Awaitable[Limits]]
# (tenant, stop counting at) -> its PENDING + RUNNING jobs, at most `stop counting at`
RunningJobs = Callable[[str, int], Awaitable[int]]
# tenant -> bytes of its uploads
StoredBytes = Callable[[str], Awaitable[int]]


def rate_limited(retry_after_s: float, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        message=f"rate limit of {limit} requests per second for this API key exceeded",
        reason="RATE_LIMITED",
        metadata={"limit": str(limit), "unit": "requests_per_second"},
        retry_delay=retry_after_s,
    )


def quota_exceeded(name: str, limit: int, retry_after_s: float | None = None) -> ResourceExhausted:
    return ResourceExhausted(
        message=f"quota {name} ({limit}) reached",
        reason="QUOTA_EXCEEDED",
        metadata={"quota": name, "limit": str(limit)},
        retry_delay=retry_after_s,
        retryable=retry_after_s is not None,
    )


def _next_midnight(now: datetime) -> datetime:
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


@dataclass(eq=False)
class _Allowance:
    """What one replica holds of a key's allowance."""

    limit: int
    left: int = 0  # leased requests not yet spent
    lapses: float = 0.0  # (monotonic) when they may no longer be spent
    started: float = 0.0  # when the last block was leased
    used: int = 0  # requests spent from the last block
    refused_until: float = 0.0  # (wall clock) the window is full until then
    leasing: asyncio.Future[None] | None = None
    waiting: int = 0  # requests waiting for the block being leased


class Allowances:
    """A key's per-second allowance, leased from the moving window in blocks.

    A block of n is one hit of cost n in Valkey's window (all n counted at once, by one script,
    exactly as n requests would be), spent by this replica's next requests of the key during
    `lease_s`; what is left then lapses. A block is sized to the key's recent rate on this
    replica (its requests in a lease period, at least those waiting), at most
    `limit // BLOCK_SHARE`; when the window cannot take a block, one request is counted alone,
    so a refusal means the window is full. Once refused, the key is refused here without a
    round trip until the window's oldest hit leaves (`reset_time`: no replica can add a hit
    before then). Leasing changes the limit's exactness, within a bound: with R replicas
    serving a key, block b = limit // BLOCK_SHARE (so b - 1 = 24 for the default 500/s):
    - no second admits more than limit + R x (b - 1) of the key's requests (hits counted in
      the window, plus what each replica still held of one block leased before it);
    - a request may be refused while the window holds hits leased and not (yet) spent: at
      most R x (b - 1) held now, plus blocks that lapsed part-spent in the last second (a
      rate that drops right after a lease; a steady rate leaves about nothing).
    Keys limited below 2 x BLOCK_SHARE requests per second have b = 1: every request is a hit
    of its own, exact across replicas as before.
    """

    def __init__(self, limiter: MovingWindowRateLimiter, lease_s: float = LEASE_S) -> None:
        self.limiter = limiter
        self.lease_s = lease_s
        self._keys: LRUCache[str, _Allowance] = LRUCache(maxsize=ALLOWANCE_KEYS)

    async def spend(self, key: str, limit: int) -> None:
        """Admit one request of `key`, or raise RATE_LIMITED."""
        block = limit // BLOCK_SHARE
        if block <= 1 or self.lease_s <= 0:
            if not await self._hit(key, limit, 1):
                raise await self._refusal(key, limit)
            return
        held = self._keys.get(key)
        if held is None or held.limit != limit:  # a new key, or its tenant's limit changed
            held = self._keys[key] = _Allowance(limit)
        while True:
            if held.refused_until > time.time():
                raise rate_limited(max(0.001, held.refused_until - time.time()), limit)
            now = time.monotonic()
            if held.left > 0 and now < held.lapses:
                held.left -= 1
                held.used += 1
                return
            if held.leasing is None:
                return await self._lease(key, held, block, now)
            held.waiting += 1
            try:
                # Shielded: a cancelled waiter does not cancel the lease others wait on.
                await asyncio.shield(held.leasing)
            finally:
                held.waiting -= 1

    async def _lease(self, key: str, held: _Allowance, block: int, now: float) -> None:
        """Lease a block for `held` and spend its first request (the caller's)."""
        size = self._size(held, now, block)
        held.leasing = asyncio.get_running_loop().create_future()
        try:
            granted = await self._hit(key, held.limit, size)
            if not granted and size > 1:
                size = 1
                granted = await self._hit(key, held.limit, 1)
            if not granted:
                refusal = await self._refusal(key, held.limit)
                held.refused_until = time.time() + (refusal.retry_delay or 0.0)
                raise refusal
            now = time.monotonic()
            held.left, held.used = size - 1, 1
            held.started, held.lapses = now, now + self.lease_s
        finally:
            held.leasing.set_result(None)
            held.leasing = None

    def _size(self, held: _Allowance, now: float, block: int) -> int:
        """The key's requests per lease period here, from the last block's pace (1 after a
        pause), at least one per waiting request, at most `block`."""
        want = 1
        if held.started and now - held.started < 2 * self.lease_s:
            elapsed = max(min(now - held.started, self.lease_s), 0.001)
            want = math.ceil(held.used * self.lease_s / elapsed)
        return max(1, min(block, max(want, held.waiting + 1)))

    async def _hit(self, key: str, limit: int, cost: int) -> bool:
        """Count `cost` hits of `key` in its window; False when they do not fit. With Valkey
        down the request is let through (logged)."""
        try:
            # Untraced: a span per round trip (an EVALSHA) for bookkeeping that the request's
            # own span already times; a refusal is an error on that span.
            with suppress_instrumentation():
                return await self.limiter.hit(RateLimitItemPerSecond(limit), key, cost=cost)
        except redis.RedisError:
            log.warning("rate limit not checked: Valkey unavailable", exc_info=True)
            return True

    async def _refusal(self, key: str, limit: int) -> ResourceExhausted:
        """RATE_LIMITED, retry when the window's oldest hit leaves it."""
        reset = time.time() + 1.0
        try:
            with suppress_instrumentation():
                stats = await self.limiter.get_window_stats(RateLimitItemPerSecond(limit), key)
            reset = stats.reset_time
        except redis.RedisError:
            log.warning("rate limit window not read: Valkey unavailable", exc_info=True)
        return rate_limited(max(0.001, reset - time.time()), limit)


class Quotas:
    def __init__(
        self,
        redis_url: str,
        cache: redis.Redis,
        limits_of: LimitsOf,
        running_jobs: RunningJobs,
        stored_bytes: StoredBytes,
        cache_ttl_s: float,
        lease_s: float = LEASE_S,
    ) -> None:
        """`lease_s` 0: every request is counted in Valkey as it comes (no leases)."""
        storage = RedisStorage(
            redis_url.replace("redis://", "async+redis://", 1),
            implementation="redispy",
            key_prefix="pixmesh:rate",
            socket_timeout=2.0,
        )
        self.limiter = MovingWindowRateLimiter(storage)
        self.allowances = Allowances(self.limiter, lease_s)
        self.cache = cache
        self.limits_of = limits_of
        self.running_jobs = running_jobs
        self.stored_bytes = stored_bytes
        self.cache_ttl_s = cache_ttl_s
        self._limits: dict[str, tuple[Limits, float]] = {}

    async def limits(self, tenant_id: str) -> Limits:
        now = time.monotonic()
        cached = self._limits.get(tenant_id)
        if cached and cached[1] > now:
            return cached[0]
        limits = await self.limits_of(tenant_id)
        self._limits[tenant_id] = (limits, now + self.cache_ttl_s)
        return limits

    # ---- per request ----------------------------------------------------------------------

    async def check_request(self, principal: Principal) -> None:
        """Count one request of the key; RATE_LIMITED over the tenant's per-key rate."""
        limit = (await self.limits(principal.tenant_id)).requests_per_second
        if limit <= 0:
            return
        await self.allowances.spend(principal.key_id, limit)

    # ---- jobs -----------------------------------------------------------------------------

    def _day_key(self, tenant_id: str, now: datetime) -> str:
        return f"pixmesh:quota:jobs:{tenant_id}:{now:%Y%m%d}"

    @asynccontextmanager
    async def job(self, tenant_id: str) -> AsyncIterator[None]:
        """Around a job creation: the running-jobs and jobs-per-day checks; the day's count is
        given back if the creation raises."""
        limits = await self.limits(tenant_id)
        if limits.running_jobs > 0:
            running = await self.running_jobs(tenant_id, limits.running_jobs)
            if running >= limits.running_jobs:
                raise quota_exceeded("running_jobs", limits.running_jobs, 1.0)
        counted: str | None = None
        if limits.jobs_per_day > 0:
            now = datetime.now(UTC)
            key = self._day_key(tenant_id, now)
            try:
                async with self.cache.pipeline(transaction=True) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, DAY_TTL_S)
                    count, _ = await pipe.execute()
                counted = key
            except redis.RedisError:
                log.warning("daily job quota not checked: Valkey unavailable", exc_info=True)
                count = 0
            if count > limits.jobs_per_day:
                await self._give_back(key)
                wait = (_next_midnight(now) - now).total_seconds()
                raise quota_exceeded("jobs_per_day", limits.jobs_per_day, wait)
        try:
            yield
        except BaseException:
            if counted is not None:
                await self._give_back(counted)
            raise

    async def _give_back(self, key: str) -> None:
        try:
            await self.cache.decr(key)
        except redis.RedisError:
            log.warning("could not give back a daily job count", exc_info=True)

    # ---- storage --------------------------------------------------------------------------

    async def check_storage(self, tenant_id: str, adding: int) -> None:
        """QUOTA_EXCEEDED (not retryable: deleting images frees space) if `adding` more bytes
        would take the tenant's uploads over its storage quota."""
        limit = (await self.limits(tenant_id)).stored_bytes
        if limit > 0 and await self.stored_bytes(tenant_id) + adding > limit:
            raise quota_exceeded("stored_bytes", limit)

    # ---- reading --------------------------------------------------------------------------

    async def usage(self, principal: Principal) -> pb.GetUsageResponse:
        tenant = principal.tenant_id
        limits = await self.limits(tenant)
        now = datetime.now(UTC)
        rps_used = 0
        if limits.requests_per_second > 0:
            item = RateLimitItemPerSecond(limits.requests_per_second)
            stats = await self.limiter.get_window_stats(item, principal.key_id)
            rps_used = limits.requests_per_second - stats.remaining
        day = await self.cache.get(self._day_key(tenant, now))
        # Counted up to the limit (or 100 when unlimited): past it the figure says "at least".
        running = await self.running_jobs(tenant, max(limits.running_jobs, 100))
        resp = pb.GetUsageResponse(
            quotas=[
                pb.Quota(
                    name="requests_per_second", used=rps_used, limit=limits.requests_per_second
                ),
                pb.Quota(name="running_jobs", used=running, limit=limits.running_jobs),
                pb.Quota(name="jobs_per_day", used=int(day or 0), limit=limits.jobs_per_day),
                pb.Quota(
                    name="stored_bytes",
                    used=await self.stored_bytes(tenant),
                    limit=limits.stored_bytes,
                ),
            ]
        )
        resp.day_resets_at.FromDatetime(_next_midnight(now))
        return resp


def count_open_jobs(stub: jobs_pb2_grpc.JobsServiceStub, timeout_s: float) -> RunningJobs:
    """RunningJobs through the jobs service's ListJobs (PENDING, then RUNNING), a page at a
    time, stopping once `stop` are counted."""

    async def count(tenant_id: str, stop: int) -> int:
        total = 0
        for state in (job_pb2.Job.PENDING, job_pb2.Job.RUNNING):
            token = ""
            while total < stop:
                req = jobs_pb2.ListJobsRequest(
                    tenant_id=tenant_id,
                    page_size=min(100, stop - total),
                    page_token=token,
                    state=state,
                )
                with rpc_errors():
                    resp = await stub.ListJobs(req, timeout=timeout_s)
                total += len(resp.jobs)
                token = resp.next_page_token
                if not token:
                    break
        return min(total, stop)

    return count


def limits_from(defaults: Limits, own: Mapping[str, int | None]) -> Limits:
    """The tenant's own limits where set, else the defaults."""

    def pick(name: str) -> int:
        value = own.get(name)
        return int(getattr(defaults, name)) if value is None else value

    return Limits(
        requests_per_second=pick("requests_per_second"),
        running_jobs=pick("running_jobs"),
        jobs_per_day=pick("jobs_per_day"),
        stored_bytes=pick("stored_bytes"),
    )
