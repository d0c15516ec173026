"""Admission control: refuse a job while a task queue it needs is over its limit.

ARCHITECTURE §4, "backpressure, not collapse". Before CreateJob the gateway looks at the depth
(pending + unacknowledged tasks) of each worker service's durable consumer that the job's stages
use and answers RESOURCE_EXHAUSTED / QUEUE_FULL with a google.rpc.RetryInfo (HTTP 429 through
Envoy) when one is at its limit, instead of letting queues grow without bound.

Cheap and never in the way: each service's depth is fetched at most once per `ttl_s` (all
requests share it, and concurrent requests share one refresh), a fetch gives up after
`timeout_s`, and a depth that cannot be read admits the job (availability over precision; the
failure is cached for `ttl_s` too, so a NATS outage does not cost every request a timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from services.runtime import metrics
from services.runtime.errors import ResourceExhausted

log = logging.getLogger(__name__)

# The depth of a worker service's task queue ("imaging", "inference", "metadata").
DepthSource = Callable[[str], Awaitable[int]]

# What a refused caller is asked to wait: long enough for workers to drain some of the queue.
DEFAULT_RETRY_AFTER_S = 5.0


def queue_full(service: str, depth: int, limit: int, retry_after_s: float) -> ResourceExhausted:
    return ResourceExhausted(
        message=(
            f"the {service} task queue is full ({depth} tasks waiting, limit {limit}); "
            f"retry in {retry_after_s:g} s"
        ),
        reason="QUEUE_FULL",
        metadata={"service": service, "depth": str(depth), "limit": str(limit)},
        retry_delay=retry_after_s,
    )


@dataclass(frozen=True)
class _Reading:
    depth: int | None  # None: could not be read
    expires: float


class Backpressure:
    """`max_depth` 0 disables the check. A queue holding `max_depth` tasks or more is full."""

    def __init__(
        self,
        depth: DepthSource,
        max_depth: int,
        *,
        ttl_s: float = 1.0,
        timeout_s: float = 0.25,
        retry_after_s: float = DEFAULT_RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = depth
        self.max_depth = max_depth
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._readings: dict[str, _Reading] = {}
        self._refreshing: dict[str, asyncio.Future[int | None]] = {}

    async def check(self, services: Iterable[str]) -> None:
        """Raise ResourceExhausted (QUEUE_FULL) if any of `services` has a full queue."""
        if self.max_depth <= 0:
            return
        wanted = sorted(set(services))
        depths = await asyncio.gather(*(self.depth(s) for s in wanted))
        for service, depth in zip(wanted, depths, strict=True):
            if depth is not None and depth >= self.max_depth:
                log.warning(
                    "queue full, job refused",
                    extra={"service": service, "depth": depth, "limit": self.max_depth},
                )
                metrics.GATEWAY_BACKPRESSURE_REFUSALS(service).inc()
                raise queue_full(service, depth, self.max_depth, self.retry_after_s)

    async def depth(self, service: str) -> int | None:
        """The cached depth of `service`'s queue, refreshed when older than `ttl_s`."""
        reading = self._readings.get(service)
        if reading is not None and reading.expires > self._clock():
            return reading.depth
        refresh = self._refreshing.get(service)
        if refresh is None:
            refresh = asyncio.ensure_future(self._refresh(service))
            self._refreshing[service] = refresh
            refresh.add_done_callback(lambda _: self._refreshing.pop(service, None))
        # Shielded: a caller that is cancelled does not cancel the refresh others wait on.
        return await asyncio.shield(refresh)

    async def _refresh(self, service: str) -> int | None:
        depth: int | None
        try:
            depth = await asyncio.wait_for(self._source(service), self.timeout_s)
        except Exception as exc:  # timeouts, connection and JetStream errors alike
            log.warning(
                "cannot read the task queue depth; admitting jobs",
                extra={"service": service, "error": repr(exc)},
            )
            depth = None
        self._readings[service] = _Reading(depth, self._clock() + self.ttl_s)
        return depth
