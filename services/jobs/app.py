"""Composition root of the job registry: the only place that names concrete adapters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx

from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.jobs.api import JobsApi
from services.jobs.batches import Batches, BatchPolicy
from services.jobs.connections import Bucket, ConnectionStore
from services.jobs.consumers import task_events_consumer
from services.jobs.deadletters import DeadLetters
from services.jobs.fleet import Fleet
from services.jobs.outbox import OutboxRelay
from services.jobs.repository import JobsRepository
from services.jobs.service import JobsService
from services.jobs.settings import JobsSettings
from services.jobs.webhook_store import WebhookStore
from services.jobs.webhooks import WebhookPolicy
from services.runtime import bus as busmod
from services.runtime import db, metrics
from services.runtime.bus import Bus, Consumer, EventRetention
from services.runtime.imageprobe import ProbeLimits
from services.runtime.lanes import BATCH_LANE
from services.runtime.pipeline import WORKER_SERVICES
from services.runtime.presence import Announcer, PresenceBoard
from services.runtime.secrets import SecretBox
from services.runtime.server import App, GrpcService, Worker
from services.runtime.storage import Storage, s3_client

MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)


@asynccontextmanager
async def build(settings: JobsSettings) -> AsyncIterator[App]:
    pool = await db.create_pool(settings.database_url)
    bus = await Bus.connect(
        settings.nats_url,
        "pixmesh-jobs",
        stream_replicas=settings.stream_replicas,
        events=EventRetention.from_settings(settings),
    )
    # Replicas of every service, for GetFleetStatus.
    board = PresenceBoard(bus.nc)
    batch_hooks: httpx.AsyncClient | None = None
    try:
        await db.migrate(pool, "jobs", MIGRATIONS)
        await bus.ensure_streams()
        secrets = SecretBox([k.get_secret_value() for k in settings.secrets_keys])
        if not secrets.sealing:
            log.warning("PIXMESH_SECRETS_KEYS is not set: webhook secrets are stored unencrypted")
        repo = JobsRepository(pool, job_timeout_s=settings.job_timeout_s, secrets=secrets)
        service = JobsService(
            repo,
            bus,
            max_renditions=settings.max_renditions,
            webhook_policy=WebhookPolicy(
                secret=settings.webhook_secret.get_secret_value()
                if settings.webhook_secret
                else None,
                max_attempts=settings.webhook_max_attempts,
                timeout_s=settings.webhook_timeout_s,
                backoff_s=settings.webhook_backoff_s,
                backoff_max_s=settings.webhook_backoff_max_s,
                allow_private=settings.webhook_allow_private,
            ),
            webhook_store=WebhookStore(pool, secrets),
        )
        batches = _batches(settings, pool, service, bus, secrets)
        # The feeder is woken by the job events this replica applies.
        consumer = task_events_consumer(bus, service, settings, batches.task_event)
        await consumer.setup()
        await board.start()
        api = JobsApi(service, Fleet(repo, bus, board), DeadLetters(bus.js, service))
        # Batch webhooks: the jobs' policy, their own client (closed when the service stops).
        batch_hooks = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        batches.webhooks = (service.webhook_policy, batch_hooks)
        api.enable_batches(batches)
        yield App(
            services=[
                GrpcService.of(
                    jobs_pb2.DESCRIPTOR,
                    "JobsService",
                    jobs_pb2_grpc.add_JobsServiceServicer_to_server,
                    api,
                )
            ],
            workers=[
                consumer.run,
                OutboxRelay(pool, bus).run,
                batches.feed,
                service.deliver_webhooks,
                lambda stop: service.reap_overdue(stop, settings.reaper_interval_s),
                lambda stop: service.trim_retention(
                    stop,
                    interval_s=settings.retention_interval_s,
                    processed_events_s=settings.processed_events_horizon_s,
                ),
                Announcer.for_service(bus.nc, settings).run,
                _metrics_watcher(bus, repo, consumer, batches),
            ],
        )
    finally:
        if batch_hooks is not None:
            await batch_hooks.aclose()
        await board.close()
        await bus.close()
        await pool.close()


def _batches(
    settings: JobsSettings, pool: asyncpg.Pool, service: JobsService, bus: Bus, secrets: SecretBox
) -> Batches:
    """Batches (issue 12): the platform's bucket for inputs and tenant areas, the tenants'
    storage connections, and the lane: the undelivered tasks of a worker service's queue."""
    client = s3_client(settings)

    async def backlog(worker_service: str) -> int:
        info = await bus.js.consumer_info(
            busmod.TASKS_STREAM, busmod.task_durable(worker_service, BATCH_LANE), timeout=1.0
        )
        return int(info.num_pending or 0)

    return Batches(
        pool,
        service,
        Storage(client, settings.s3_bucket),
        Bucket(client, settings.s3_bucket),
        ConnectionStore(pool, secrets),
        backlog,
        BatchPolicy(
            window=settings.batch_window,
            max_open=settings.batch_max_open,
            lane_backlog=settings.batch_lane_backlog,
            resync_s=settings.batch_resync_s,
            tick_s=settings.batch_tick_s,
            idle_s=settings.batch_idle_s,
            backlog_ttl_s=settings.batch_backlog_ttl_s,
            max_renditions=settings.max_renditions,
            limits=ProbeLimits(settings.max_input_bytes, settings.max_pixels, settings.max_frames),
        ),
    )


def _metrics_watcher(bus: Bus, repo: JobsRepository, events: Consumer, batches: Batches) -> Worker:
    """The fleet's queues as gauges, exported by jobs: every worker service's task consumer,
    the task-event and upload consumers, every stream's size, the jobs running now and the
    batches by state."""

    async def running() -> None:
        metrics.JOBS_RUNNING().set(await repo.count_running())

    queues = [
        metrics.WatchedQueue(
            busmod.TASKS_STREAM, busmod.task_durable(name), busmod.task_subject(name)
        )
        for name in WORKER_SERVICES
    ]
    # The metadata service's consumer of upload events (services/metadata/consumers.py).
    uploads = metrics.WatchedQueue(
        busmod.EVENTS_STREAM, "metadata-uploads", busmod.IMAGE_UPLOADED_SUBJECT
    )
    return metrics.queue_watcher(
        bus,
        [*queues, metrics.WatchedQueue.of(events), uploads],
        streams=list(busmod.STREAMS),
        refreshers=[running, batches.count_metrics],
    )
