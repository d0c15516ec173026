"""Per-tenant limits: requests per second per key, running jobs, jobs per day, stored bytes.

- Requests per second: a moving window per API key in Valkey, from the `limits` library
  (its Redis storage keeps the window in a sorted list updated by one Lua script, so replicas
  hitting one key at once are counted exactly; a token bucket or GCRA library with a redis-py
  asyncio backend was not found among well-kept packages). Over it: RESOURCE_EXHAUSTED
  RATE_LIMITED with RetryInfo = when the oldest request leaves the window (HTTP 429 and
  `Retry-After`).
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

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis.asyncio as redis
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


class Quotas:
    def __init__(
        self,
        redis_url: str,
        cache: redis.Redis,
        limits_of: LimitsOf,
        running_jobs: RunningJobs,
        stored_bytes: StoredBytes,
        cache_ttl_s: float,
    ) -> None:
        storage = RedisStorage(
            redis_url.replace("redis://", "async+redis://", 1),
            implementation="redispy",
            key_prefix="pixmesh:rate",
            socket_timeout=2.0,
        )
        self.limiter = MovingWindowRateLimiter(storage)
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
        item = RateLimitItemPerSecond(limit)
        try:
            # Untraced: a span per request (an EVALSHA) for bookkeeping that the request's own
            # span already times; a refusal is an error on that span.
            with suppress_instrumentation():
                if await self.limiter.hit(item, principal.key_id):
                    return
                stats = await self.limiter.get_window_stats(item, principal.key_id)
        except redis.RedisError:
            log.warning("rate limit not checked: Valkey unavailable", exc_info=True)
            return
        raise rate_limited(max(0.001, stats.reset_time - time.time()), limit)

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
