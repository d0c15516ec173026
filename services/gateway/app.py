"""Composition root of the gateway: the only place that names concrete adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import redis.asyncio as redis

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from pixmesh.imaging.v1 import imaging_pb2, imaging_pb2_grpc
from pixmesh.inference.v1 import inference_pb2, inference_pb2_grpc
from pixmesh.jobs.v1 import jobs_pb2_grpc
from pixmesh.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from services.gateway.api import GatewayApi
from services.gateway.backpressure import Backpressure
from services.gateway.batches import BatchRequests
from services.gateway.capabilities import CapabilityCache, Fetch
from services.gateway.deletion import Deletion
from services.gateway.events import BusUploadEvents
from services.gateway.idempotency import IdempotencyCache
from services.gateway.image_rows import ImageRows
from services.gateway.jobs import Planner
from services.gateway.key_admin import KeyAdmin
from services.gateway.keys import KeyStore
from services.gateway.metadata import MetadataQueries
from services.gateway.plans import PlanCache
from services.gateway.quotas import Limits, Quotas, count_open_jobs, limits_from
from services.gateway.repository import GatewayRepository
from services.gateway.revocations import Revocations
from services.gateway.service import GatewayService
from services.gateway.settings import GatewaySettings
from services.runtime import db
from services.runtime.bus import Bus, EventRetention, task_durable
from services.runtime.imageprobe import configure_pillow
from services.runtime.presence import Announcer
from services.runtime.server import App, GrpcService, channel
from services.runtime.storage import Storage

MIGRATIONS = Path(__file__).parent / "migrations"


def _fetch(stub: object, request: object) -> Fetch:
    async def fetch(timeout: float) -> operations_pb2.Capabilities:
        resp = await stub.ListOperations(request, timeout=timeout)  # type: ignore[attr-defined]
        return resp.capabilities  # type: ignore[no-any-return]

    return fetch


def _planner(stub: imaging_pb2_grpc.ImagingServiceStub, capabilities: CapabilityCache) -> Planner:
    """Imaging's PlanPipeline behind the plan cache (services/gateway/plans.py)."""

    async def plan(
        image: image_pb2.Image,
        ops: Sequence[operations_pb2.Operation],
        renditions: Sequence[operations_pb2.Rendition],
        timeout: float,
    ) -> tuple[operations_pb2.PipelinePlan, str]:
        req = imaging_pb2.PlanPipelineRequest(image=image, operations=ops, renditions=renditions)
        resp: imaging_pb2.PlanPipelineResponse = await stub.PlanPipeline(req, timeout=timeout)
        return resp.plan, resp.plan_fingerprint

    return PlanCache(plan, lambda: capabilities.plan_fingerprint("imaging"), capabilities.expire)


def origin(url: str) -> str:
    """The origin of a URL ("http://127.0.0.1:8080/x" -> "http://127.0.0.1:8080")."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@asynccontextmanager
async def build(settings: GatewaySettings) -> AsyncIterator[App]:
    configure_pillow(settings.max_pixels)
    async with AsyncExitStack() as stack:
        pool = await db.open_pool(stack, settings.database_url, "gateway", MIGRATIONS)
        cache = redis.Redis.from_url(settings.redis_url, socket_timeout=2.0)
        stack.push_async_callback(cache.aclose)
        storage = Storage.from_settings(settings, settings.s3_public_endpoint)
        await storage.ensure_bucket()
        # The console (same origin as Envoy) uploads big files with presigned PUTs.
        await storage.allow_browsers([origin(settings.public_base_url), *settings.cors_origins])
        jobs = await stack.enter_async_context(channel(settings.jobs_addr))
        imaging = await stack.enter_async_context(channel(settings.imaging_addr))
        inference = await stack.enter_async_context(channel(settings.inference_addr))
        metadata = await stack.enter_async_context(channel(settings.metadata_addr))
        bus = await Bus.connect(
            settings.nats_url,
            "pixmesh-gateway",
            stream_replicas=settings.stream_replicas,
            events=EventRetention.from_settings(settings),
        )
        stack.push_async_callback(bus.close)
        await bus.ensure_streams()
        events = BusUploadEvents(bus, timeout_s=settings.call_timeout_s)
        metadata_stub = metadata_pb2_grpc.MetadataServiceStub(metadata)
        imaging_stub = imaging_pb2_grpc.ImagingServiceStub(imaging)
        capabilities = CapabilityCache(
            {
                "imaging": _fetch(imaging_stub, imaging_pb2.ListOperationsRequest()),
                "inference": _fetch(
                    inference_pb2_grpc.InferenceServiceStub(inference),
                    inference_pb2.ListOperationsRequest(),
                ),
                "metadata": _fetch(metadata_stub, metadata_pb2.ListOperationsRequest()),
            },
            ttl_s=settings.cache_ttl_s,
        )
        # Image rows kept between requests, dropped on every replica when deleted (revocations).
        repo = GatewayRepository(pool, ImageRows(settings.cache_ttl_s))
        jobs_stub = jobs_pb2_grpc.JobsServiceStub(jobs)
        service = GatewayService(
            settings,
            repo,
            IdempotencyCache(cache, settings.idempotency_ttl_s),
            storage,
            jobs_stub,
            capabilities,
            events,
            _planner(imaging_stub, capabilities),
            Backpressure(
                lambda service: bus.consumer_depth(task_durable(service)),
                settings.max_queue_depth,
            ),
        )
        queries = MetadataQueries(repo, metadata_stub, events)
        revocations = Revocations(bus.nc, service.auth, repo.images)
        keys = KeyAdmin(KeyStore(pool), revocations.announce)
        defaults = Limits(
            requests_per_second=settings.rate_limit_rps,
            running_jobs=settings.max_running_jobs,
            jobs_per_day=settings.max_jobs_per_day,
            stored_bytes=settings.max_stored_bytes,
        )

        async def limits_of(tenant: str) -> Limits:
            return limits_from(defaults, await repo.tenant_limits(tenant))

        quotas = Quotas(
            settings.redis_url,
            cache,
            limits_of,
            count_open_jobs(jobs_stub, settings.call_timeout_s),
            repo.stored_bytes,
            settings.cache_ttl_s,
        )
        deletion = Deletion(
            repo,
            storage,
            jobs_stub,
            metadata_stub,
            revocations.announce,
            revocations.announce_images,
        )
        api = GatewayApi(service, settings, queries, keys, quotas, deletion)
        api.enable_batches(
            BatchRequests(settings, repo, jobs_stub, capabilities, storage, service.presets)
        )
        yield App(
            services=[
                GrpcService.of(
                    gateway_pb2.DESCRIPTOR,
                    "GatewayService",
                    gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
                    api,
                    public=True,  # API keys, checked by the gateway itself
                )
            ],
            workers=[
                Announcer.for_service(bus.nc, settings).run,
                revocations.run,
                lambda stop: deletion.run_retention(
                    stop, settings.tenant_retention_interval_s, settings.call_timeout_s
                ),
            ],
        )
