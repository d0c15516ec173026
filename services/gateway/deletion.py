"""DeleteImage, DeleteJob, DeleteTenantData and per-tenant retention.

Objects are content-addressed and shared, so each owner decides what nothing references any
more: the jobs service for outputs (services/jobs/deletion.py: against every remaining job on
the same source, keeping those a running job may reuse), the gateway for sources (an image's
bytes go with the last image row of any tenant that has them, under a lock that uploads share:
GatewayRepository.delete_images; a source that no deleted job's successor reads and no image
has, such as an object a batch took from a storage prefix, goes with its last job:
DeleteJobsResponse.released_sources, GatewayRepository.release_sources). The metadata service forgets the image's metadata and
similarity entry; its previews (previews/<sha256>-<size>.webp) go with the source bytes.

Every step is idempotent, so a deletion interrupted half-way is finished by calling it again:
jobs and outputs first, then metadata, then the image row and its bytes (the row goes last, so
a retry still finds the image).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh.gateway.v1 import gateway_pb2 as pb
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from pixmesh.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from services.gateway import errors
from services.gateway.repository import GatewayRepository
from services.gateway.upload_rules import delete_tenant_rules
from services.runtime import metrics
from services.runtime.errors import FailedPrecondition, invalid, rpc_errors
from services.runtime.storage import Storage, input_key, input_sha256

log = logging.getLogger(__name__)

# Revoke keys in every replica's cache (Revocations.announce).
Announce = Callable[[str], Awaitable[None]]
# Drop deleted image rows from every replica's kept rows (Revocations.announce_images).
AnnounceImages = Callable[[Sequence[str]], Awaitable[None]]


async def _nobody(image_ids: Sequence[str]) -> None:
    """No replica keeps image rows (a deletion run outside the gateway's process)."""


def jobs_running(what: str, *, a_job: bool = False) -> FailedPrecondition:
    """`what` ("job job_…", "image img_…", "tenant acme") cannot be deleted while it runs."""
    message = (
        f"{what} is still running: cancel it (or wait) and delete again"
        if a_job
        else f"{what} has jobs still running: cancel them (or wait) and delete again"
    )
    return FailedPrecondition(message=message, reason="JOBS_RUNNING")


# Retention: jobs per DeleteJobs batch, images per batch (each brings all its jobs, so fewer),
# and the pause between two batches.
RETENTION_BATCH = 200
RETENTION_IMAGE_BATCH = 50
RETENTION_PAUSE_S = 0.05


def _counted(part: pb.DeletionReport) -> pb.DeletionReport:
    """`part` once counted in pixmesh_retention_removed_total."""
    for store, n in (
        ("jobs", part.jobs_deleted),
        ("images", part.images_deleted),
        ("objects", part.objects_deleted),
    ):
        if n:
            metrics.RETENTION_REMOVED(store).inc(n)
    return part


def _add(total: pb.DeletionReport, part: pb.DeletionReport) -> None:
    total.images_deleted += part.images_deleted
    total.jobs_deleted += part.jobs_deleted
    total.objects_deleted += part.objects_deleted
    total.objects_kept += part.objects_kept


class Deletion:
    def __init__(
        self,
        repo: GatewayRepository,
        storage: Storage,
        jobs: jobs_pb2_grpc.JobsServiceStub,
        metadata: metadata_pb2_grpc.MetadataServiceStub,
        announce: Announce,
        announce_images: AnnounceImages = _nobody,
    ) -> None:
        self.repo = repo
        self.storage = storage
        self.jobs = jobs
        self.metadata = metadata
        self.announce = announce
        self.announce_images = announce_images

    async def _delete_jobs(
        self, request: jobs_pb2.DeleteJobsRequest, timeout: float, what: str
    ) -> pb.DeletionReport:
        with rpc_errors():
            resp: jobs_pb2.DeleteJobsResponse = await self.jobs.DeleteJobs(request, timeout=timeout)
        if request.fail_if_running and resp.jobs_running:
            raise jobs_running(what, a_job=bool(request.job_id))
        return await self._deleted_jobs(resp)

    async def _deleted_jobs(self, resp: jobs_pb2.DeleteJobsResponse) -> pb.DeletionReport:
        """What DeleteJobs left to the gateway: the outputs nothing references, and the
        released sources that no image has."""
        await self.storage.delete_many(resp.unreferenced_keys)
        shas = [sha for sha in map(input_sha256, resp.released_sources) if sha]
        sources = await self.repo.release_sources(shas, self._delete_sources)
        return pb.DeletionReport(
            jobs_deleted=resp.jobs_deleted,
            objects_deleted=len(resp.unreferenced_keys) + sources,
            objects_kept=resp.keys_kept,
        )

    async def delete_image(
        self, tenant_id: str, image_id: str, timeout: float
    ) -> pb.DeletionReport:
        if not image_id:
            raise invalid("image_id", "required")
        image = await self.repo.get_image(tenant_id, image_id)
        if image is None:
            raise errors.image_not_found(image_id)
        request = jobs_pb2.DeleteJobsRequest(
            tenant_id=tenant_id, image_id=image_id, fail_if_running=True
        )
        report = await self._delete_jobs(request, timeout, f"image {image_id}")
        with rpc_errors():
            await self.metadata.DeleteImageMetadata(
                metadata_pb2.DeleteImageMetadataRequest(tenant_id=tenant_id, sha256=image.sha256),
                timeout=timeout,
            )
        await self._delete_rows(tenant_id, [image_id], report)
        return report

    async def delete_job(self, tenant_id: str, job_id: str, timeout: float) -> pb.DeletionReport:
        if not job_id:
            raise invalid("job_id", "required")
        request = jobs_pb2.DeleteJobsRequest(
            tenant_id=tenant_id, job_id=job_id, fail_if_running=True
        )
        return await self._delete_jobs(request, timeout, f"job {job_id}")

    async def delete_tenant_data(
        self, tenant_id: str, confirm: str, delete_keys: bool, timeout: float
    ) -> pb.DeletionReport:
        if confirm != tenant_id:
            raise invalid("confirm_tenant_id", "must be the tenant id of the calling key")
        request = jobs_pb2.DeleteJobsRequest(tenant_id=tenant_id, fail_if_running=True)
        report = await self._delete_jobs(request, timeout, f"tenant {tenant_id}")
        with rpc_errors():
            await self.metadata.DeleteImageMetadata(
                metadata_pb2.DeleteImageMetadataRequest(tenant_id=tenant_id, all_images=True),
                timeout=timeout,
            )
        while due := await self.repo.due_images(tenant_id, None, RETENTION_IMAGE_BATCH):
            await self._delete_rows(tenant_id, [i for i, _ in due], report)
        # Its upload rules too: left behind, they would run on whatever it uploads next.
        await delete_tenant_rules(self.repo.pool, tenant_id)
        if delete_keys:
            for digest in await self.repo.delete_keys(tenant_id):
                await self.announce(digest)
        return report

    async def _delete_rows(
        self, tenant_id: str, image_ids: list[str], report: pb.DeletionReport
    ) -> None:
        """The image rows, and the bytes no other image has left (GatewayRepository.
        delete_images), counted into `report`; once committed, every replica is told to drop
        the rows it keeps (services/gateway/image_rows.py)."""
        images, sources = await self.repo.delete_images(tenant_id, image_ids, self._delete_sources)
        await self.announce_images(image_ids)
        report.images_deleted += images
        report.objects_deleted += sources
        report.objects_kept += images - sources

    # ---- retention ------------------------------------------------------------------------

    async def _expire_images(
        self, tenant_id: str, due: list[tuple[str, str]], timeout: float
    ) -> pb.DeletionReport:
        """A batch of due images (id, sha256), as delete_image does one, in one call to each
        of jobs, metadata and Postgres and a few S3 requests instead of ~6 round trips per
        image (BENCHMARKS.md, "Soak and retention"). An image with a job still running is
        left for a later pass."""
        request = jobs_pb2.DeleteJobsRequest(
            tenant_id=tenant_id, image_ids=[i for i, _ in due], fail_if_running=True
        )
        with rpc_errors():
            resp: jobs_pb2.DeleteJobsResponse = await self.jobs.DeleteJobs(request, timeout=timeout)
        report = await self._deleted_jobs(resp)
        busy = set(resp.images_running)
        free = [(i, sha) for i, sha in due if i not in busy]
        if not free:
            return report
        with rpc_errors():
            await self.metadata.DeleteImageMetadata(
                metadata_pb2.DeleteImageMetadataRequest(
                    tenant_id=tenant_id, sha256s=sorted({sha for _, sha in free})
                ),
                timeout=timeout,
            )
        await self._delete_rows(tenant_id, [i for i, _ in free], report)
        return report

    async def _delete_sources(self, sha256s: list[str]) -> None:
        keys = [input_key(sha) for sha in sha256s]
        for sha in sha256s:
            keys += await self.storage.keys(f"previews/{sha}-")
        await self.storage.delete_many(keys)

    async def apply_retention(self, timeout: float) -> pb.DeletionReport:
        """One pass over the tenants with a retention: finished jobs (and their outputs) older
        than their outputs' retention, images (with their jobs, outputs and metadata) older
        than their sources' retention; an image whose jobs still run waits for a later pass.
        Jobs and images go in batches with a pause between batches, so a pass that finds hours
        of work due spreads it instead of competing with the hot path in one burst (soak:
        BENCHMARKS.md, "Soak and retention")."""
        total = pb.DeletionReport()
        now = datetime.now(UTC)
        for tenant_id, outputs_s, sources_s in await self.repo.retention():
            if outputs_s is not None:
                before = now - timedelta(seconds=outputs_s)
                while True:
                    request = jobs_pb2.DeleteJobsRequest(tenant_id=tenant_id, limit=RETENTION_BATCH)
                    request.finished_before.FromDatetime(before)
                    part = _counted(await self._delete_jobs(request, timeout, tenant_id))
                    _add(total, part)
                    if part.jobs_deleted < RETENTION_BATCH:
                        break  # the rest (if any) is held by another replica's pass
                    await asyncio.sleep(RETENTION_PAUSE_S)
            if sources_s is not None:
                before = now - timedelta(seconds=sources_s)
                while due := await self.repo.due_images(tenant_id, before, RETENTION_IMAGE_BATCH):
                    part = _counted(await self._expire_images(tenant_id, due, timeout))
                    _add(total, part)
                    if not part.images_deleted:
                        break  # only images with jobs running are left
                    await asyncio.sleep(RETENTION_PAUSE_S)
        return total

    async def run_retention(self, stop: asyncio.Event, interval_s: float, timeout: float) -> None:
        """Apply retention every `interval_s` until `stop` (each pass is idempotent, so the
        replicas running it at once only repeat each other's no-ops)."""
        while not stop.is_set():
            try:
                began = time.monotonic()
                # Background bookkeeping: no trace per deleted job and image (the pass is in
                # the log below and in pixmesh_retention_removed_total).
                with suppress_instrumentation():
                    report = await self.apply_retention(timeout)
                if report.jobs_deleted or report.images_deleted:
                    log.info(
                        "retention",
                        extra={
                            "jobs": report.jobs_deleted,
                            "images": report.images_deleted,
                            "objects": report.objects_deleted,
                            "seconds": round(time.monotonic() - began, 2),
                        },
                    )
            except Exception:
                log.warning("retention pass failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
