"""The public API's logic, one concern a module: who is calling (auth), uploads, jobs
(services/gateway/jobs.py) and the catalogue. `GatewayService` is their union, the one port the
gRPC adapter (api.py) talks to; each part can be built and tested on its own."""

from __future__ import annotations

from pixmesh.common.v1 import image_pb2
from pixmesh.gateway.v1 import gateway_pb2
from pixmesh.jobs.v1 import jobs_pb2_grpc
from services.gateway import catalogue
from services.gateway.auth import Authenticator, Principal
from services.gateway.backpressure import Backpressure
from services.gateway.capabilities import CapabilityCache
from services.gateway.events import UploadEvents
from services.gateway.idempotency import IdempotencyCache
from services.gateway.jobs import JobRequests, Planner
from services.gateway.repository import GatewayRepository
from services.gateway.settings import GatewaySettings
from services.gateway.upload_rules import UploadRules
from services.gateway.uploads import CLEANUP_BATCH, Upload, Uploads, staging_key
from services.runtime.storage import Storage

__all__ = ["CLEANUP_BATCH", "GatewayService", "Planner", "Upload", "staging_key"]


class GatewayService(Uploads, JobRequests):
    def __init__(
        self,
        settings: GatewaySettings,
        repo: GatewayRepository,
        idempotency: IdempotencyCache,
        storage: Storage,
        jobs: jobs_pb2_grpc.JobsServiceStub,
        capabilities: CapabilityCache,
        events: UploadEvents,
        planner: Planner,
        backpressure: Backpressure | None = None,
    ) -> None:
        Uploads.__init__(self, settings, repo, storage, events)
        JobRequests.__init__(
            self, settings, repo, jobs, planner, capabilities, idempotency, storage, backpressure
        )
        self.rules = UploadRules(getattr(repo, "pool", None), self.presets)
        # Late-bound: the repository's lookup is read at each cache miss, not at construction.
        self.auth = Authenticator(lambda digest: self.repo.principal(digest), settings.cache_ttl_s)

    async def upload(self, tenant_id: str, upload: Upload) -> image_pb2.Image:
        """Uploads.upload, then the job the tenant's upload rule for its kind asks for."""
        image = await Uploads.upload(self, tenant_id, upload)
        await self.rules.apply(tenant_id, image, self.create_job)
        return image

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller for an `authorization: Bearer <key>` header value (cached, see auth)."""
        return await self.auth.authenticate(authorization)

    async def list_operations(self) -> gateway_pb2.ListOperationsResponse:
        return await catalogue.list_operations(self.settings, self.capabilities, self.presets)
