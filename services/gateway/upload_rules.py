"""Upload rules (issue 13): "every upload of kind VIDEO runs preset `poster`", per tenant.

After an upload is stored and announced, the rule of its kind (if any) creates a job with that
preset and no other operation, as if the uploader had called CreateJob, under an idempotency key
made of the image and the preset: the same bytes uploaded again are the same image and get the
same job, not a second one. A failure to create it (a preset removed since, a full queue) does
not undo the upload; it is logged and recorded on the rule (ListUploadRules shows the last one,
until the rule is set again), and the uploader can create the job by hand. DeleteTenantData
deletes the tenant's rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.gateway.v1 import gateway_pb2
from services.runtime.errors import ServiceError, invalid
from services.runtime.video import check_video_job

log = logging.getLogger(__name__)

Kind = image_pb2.Image.Kind
KINDS = (image_pb2.Image.IMAGE, image_pb2.Image.VIDEO)
# (tenant, image id, operations, idempotency key, timeout, preset) -> the job.
CreateJob = Callable[..., Awaitable[job_pb2.Job]]
RULE_JOB_TIMEOUT_S = 10.0


def kind_of(image: image_pb2.Image) -> Kind.ValueType:
    return image.kind or image_pb2.Image.IMAGE  # unset: an image


def idempotency_key(image: image_pb2.Image, preset: str) -> str:
    return f"upload-rule:{image.image_id}:{preset}"


class UploadRules:
    def __init__(
        self, pool: asyncpg.Pool | None, presets: Mapping[str, Sequence[operations_pb2.Operation]]
    ) -> None:
        self._pool_or_none = pool  # None: a gateway built without Postgres (unit tests)
        self._presets = presets

    @property
    def _pool(self) -> asyncpg.Pool:
        if self._pool_or_none is None:
            raise RuntimeError("upload rules need the gateway's Postgres pool")
        return self._pool_or_none

    async def set(
        self, tenant_id: str, kind: Kind.ValueType, preset: str
    ) -> gateway_pb2.UploadRule:
        if kind not in KINDS:
            raise invalid("kind", "IMAGE or VIDEO")
        if preset not in self._presets:
            names = ", ".join(sorted(self._presets)) or "none are set"
            raise invalid("preset", f"unknown preset {preset!r} ({names})", "UNKNOWN_PRESET")
        # The preset must be able to run on this kind: video operations on videos only.
        check_video_job(list(self._presets[preset]), [], kind)
        row = await self._pool.fetchrow(
            f"""INSERT INTO gateway.upload_rules (tenant_id, kind, preset) VALUES ($1, $2, $3)
               ON CONFLICT (tenant_id, kind) DO UPDATE SET preset = $3, updated_at = now(),
                 last_error = NULL, last_error_reason = NULL, last_error_image_id = NULL,
                 last_error_at = NULL
               RETURNING {_COLUMNS}""",
            tenant_id,
            kind,
            preset,
        )
        return _rule(row)

    async def list(self, tenant_id: str) -> list[gateway_pb2.UploadRule]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM gateway.upload_rules WHERE tenant_id = $1 ORDER BY kind",
            tenant_id,
        )
        return [_rule(row) for row in rows]

    async def delete(self, tenant_id: str, kind: Kind.ValueType) -> bool:
        if kind not in KINDS:
            raise invalid("kind", "IMAGE or VIDEO")
        status: str = await self._pool.execute(
            "DELETE FROM gateway.upload_rules WHERE tenant_id = $1 AND kind = $2", tenant_id, kind
        )
        return status.endswith(" 1")

    async def apply(self, tenant_id: str, image: image_pb2.Image, create_job: CreateJob) -> None:
        """Create the job the tenant's rule for this kind of upload asks for, if there is one."""
        if self._pool_or_none is None:
            return
        preset = await self._pool.fetchval(
            "SELECT preset FROM gateway.upload_rules WHERE tenant_id = $1 AND kind = $2",
            tenant_id,
            kind_of(image),
        )
        if preset is None:
            return
        try:
            job = await create_job(
                tenant_id,
                image.image_id,
                [],
                idempotency_key(image, preset),
                RULE_JOB_TIMEOUT_S,
                preset=preset,
            )
        except ServiceError as err:
            log.warning(
                "an upload rule could not create its job",
                extra={"image_id": image.image_id, "preset": preset, "reason": err.reason},
            )
            await self._pool.execute(
                """UPDATE gateway.upload_rules SET last_error = $3, last_error_reason = $4,
                     last_error_image_id = $5, last_error_at = now()
                   WHERE tenant_id = $1 AND kind = $2""",
                tenant_id,
                kind_of(image),
                err.message[:500],  # client-safe by the error model
                err.reason,
                image.image_id,
            )
            return
        log.info(
            "upload rule created a job",
            extra={"image_id": image.image_id, "preset": preset, "job_id": job.job_id},
        )


async def delete_tenant_rules(pool: asyncpg.Pool, tenant_id: str) -> int:
    """Every rule of a tenant (DeleteTenantData); how many there were."""
    status: str = await pool.execute(
        "DELETE FROM gateway.upload_rules WHERE tenant_id = $1", tenant_id
    )
    return int(status.rsplit(" ", 1)[-1])


_COLUMNS = (
    "kind, preset, updated_at, last_error, last_error_reason, last_error_image_id, last_error_at"
)


def _rule(row: asyncpg.Record) -> gateway_pb2.UploadRule:
    rule = gateway_pb2.UploadRule(
        kind=Kind.ValueType(row["kind"]),
        preset=row["preset"],
        last_error=row["last_error"] or "",
        last_error_reason=row["last_error_reason"] or "",
        last_error_image_id=row["last_error_image_id"] or "",
    )
    rule.updated_at.FromDatetime(row["updated_at"])
    if row["last_error_at"] is not None:
        rule.last_error_at.FromDatetime(row["last_error_at"])
    return rule
