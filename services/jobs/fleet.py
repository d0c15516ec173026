"""The fleet status operators read (`pixmesh status`, GET /v1/fleet): replicas from presence
announcements, queues and dead letters from JetStream, jobs/s from Postgres.

The job registry answers it because it holds all three. Each part is read on its own: what
cannot be read (NATS or Postgres down, a slow answer) becomes a warning in the status rather
than failing the call, since an operator asks precisely when something is wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from pixmesh.common.v1 import fleet_pb2
from services.jobs.repository import JobCounts, JobsRepository
from services.runtime import bus as busmod
from services.runtime.bus import Bus, QueueStats
from services.runtime.presence import PresenceBoard

log = logging.getLogger(__name__)

# Listed first, in this order, even when none of their replicas is running; then any other name
# that announced itself, owns a consumer or has dead letters.
FLEET_SERVICES = ("gateway", "jobs", "imaging", "inference", "metadata")
# Streams whose durable consumers are shown; a consumer belongs to the service its name starts
# with (imaging-tasks, jobs-task-events, metadata-uploads).
CONSUMER_STREAMS = (busmod.TASKS_STREAM, busmod.EVENTS_STREAM)
RATE_WINDOW_S = 60.0

T = TypeVar("T")


def consumer_service(durable: str) -> str:
    return durable.split("-", 1)[0]


class Fleet:
    def __init__(
        self,
        repo: JobsRepository,
        bus: Bus,
        board: PresenceBoard,
        *,
        window_s: float = RATE_WINDOW_S,
        timeout_s: float = 2.0,
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.board = board
        self.window_s = window_s
        self.timeout_s = timeout_s

    async def status(self) -> fleet_pb2.FleetStatus:
        status = fleet_pb2.FleetStatus()
        status.time.GetCurrentTime()
        warnings: list[str] = []
        counts, queues, dead = await asyncio.gather(
            self._read("Postgres: job counts", self.repo.job_counts(self.window_s), warnings),
            self._read("NATS: consumers", self._queues(warnings), warnings),
            self._read("NATS: dead letters", self._dead_letters(), warnings),
        )
        instances = self.board.instances()
        by_queue: dict[str, list[QueueStats]] = {}
        for stats in queues or ():
            by_queue.setdefault(consumer_service(stats.consumer), []).append(stats)
        dead = dead or {}
        extra = sorted((set(instances) | set(by_queue) | set(dead)) - set(FLEET_SERVICES))
        for name in (*FLEET_SERVICES, *extra):
            svc = status.services.add(service=name, dead_letters=dead.get(name, 0))
            for seen in instances.get(name, ()):
                p = seen.presence
                svc.instances.add(
                    instance=p.instance,
                    started_at=p.started_at,
                    grpc_address=p.grpc_address,
                    metrics_address=p.metrics_address,
                    version=p.version,
                    last_seen=seen.last_seen_ts(),
                )
            svc.replicas = len(svc.instances)
            svc.queues.extend(_queue(q) for q in by_queue.get(name, ()))
        if counts is not None:
            status.jobs.CopyFrom(self._rates(counts))
        status.warnings.extend(warnings)
        return status

    async def _read(self, what: str, aw: Awaitable[T], warnings: list[str]) -> T | None:
        try:
            return await asyncio.wait_for(aw, self.timeout_s)
        except Exception as exc:
            log.warning("fleet status: %s unreadable: %r", what, exc)
            warnings.append(f"{what} unreadable ({type(exc).__name__})")
            return None

    async def _queues(self, warnings: list[str]) -> list[QueueStats]:
        """Every durable consumer of the task and event streams, in stream then subject order
        (a service's task queue before its batch lane's, pixmesh.task.<service>.batch)."""
        found: list[tuple[str, str, str]] = []
        for stream in CONSUMER_STREAMS:
            infos = await self.bus.js.consumers_info(stream)
            found += sorted(
                (
                    (stream, i.config.durable_name, i.config.filter_subject or "")
                    for i in infos
                    if i.config.durable_name
                ),
                key=lambda f: (f[0], f[2], f[1]),
            )

        async def one(stream: str, durable: str, subject: str) -> QueueStats | None:
            return await self._read(
                f"NATS: consumer {durable}",
                self.bus.queue_stats(durable, subject, stream=stream, timeout=self.timeout_s),
                warnings,
            )

        stats = await asyncio.gather(*(one(*f) for f in found))
        return [s for s in stats if s is not None]

    async def _dead_letters(self) -> dict[str, int]:
        """Messages in the DLQ per service (subject pixmesh.dlq.<service>)."""
        info = await self.bus.js.stream_info(busmod.DLQ_STREAM, subjects_filter="pixmesh.dlq.>")
        prefix = busmod.dlq_subject("")
        return {
            subject.removeprefix(prefix): int(count)
            for subject, count in (info.state.subjects or {}).items()
            if subject.startswith(prefix)
        }

    def _rates(self, counts: JobCounts) -> fleet_pb2.JobRates:
        rates = fleet_pb2.JobRates(
            created=counts.created,
            finished=counts.finished,
            failed=counts.failed,
            created_per_second=counts.created / self.window_s,
            finished_per_second=counts.finished / self.window_s,
            running=counts.running,
            pending=counts.pending,
        )
        rates.window.FromNanoseconds(round(self.window_s * 1e9))
        if counts.latency_p50_s is not None and counts.latency_p95_s is not None:
            rates.latency_p50.FromNanoseconds(round(counts.latency_p50_s * 1e9))
            rates.latency_p95.FromNanoseconds(round(counts.latency_p95_s * 1e9))
        return rates


def _queue(stats: QueueStats) -> fleet_pb2.QueueStatus:
    q = fleet_pb2.QueueStatus(
        stream=stats.stream,
        consumer=stats.consumer,
        pending=stats.pending,
        ack_pending=stats.ack_pending,
        redelivered=stats.redelivered,
        waiting=stats.waiting,
    )
    if stats.oldest_age_s is not None:
        q.oldest_age.FromNanoseconds(round(stats.oldest_age_s * 1e9))
    return q
