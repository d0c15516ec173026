"""Upload rules against Postgres: a rule whose job cannot be created says so in its listing,
and a tenant's rules go with DeleteTenantData's delete_tenant_rules."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from pixmesh.common.v1 import image_pb2, job_pb2
from pixmesh.common.v1.operations_pb2 import Operation, Resize
from services.gateway.upload_rules import UploadRules, delete_tenant_rules
from services.runtime.errors import ResourceExhausted

IMAGE = image_pb2.Image.IMAGE
THUMB = [Operation(resize=Resize(width=64, height=64))]


async def test_a_failed_rule_job_is_shown_on_the_rule_until_it_is_set_again(
    gateway_pool: asyncpg.Pool,
) -> None:
    pool = gateway_pool
    rules = UploadRules(pool, {"thumb": THUMB})
    tenant, other = (f"rules-{uuid.uuid4().hex[:8]}" for _ in range(2))
    await rules.set(tenant, IMAGE, "thumb")
    await rules.set(other, IMAGE, "thumb")
    created: list[str] = []

    async def create_job(tenant_id: str, image_id: str, *args: Any, **kw: Any) -> job_pb2.Job:
        created.append(image_id)
        return job_pb2.Job(job_id="job_1")

    async def queue_full(*args: Any, **kw: Any) -> job_pb2.Job:
        raise ResourceExhausted(message="the imaging queue is full", reason="QUEUE_FULL")

    await rules.apply(tenant, image_pb2.Image(image_id="img_ok"), create_job)
    (rule,) = await rules.list(tenant)
    assert created == ["img_ok"] and rule.last_error == "" and not rule.HasField("last_error_at")

    await rules.apply(tenant, image_pb2.Image(image_id="img_late"), queue_full)
    (rule,) = await rules.list(tenant)
    assert (rule.last_error, rule.last_error_reason, rule.last_error_image_id) == (
        "the imaging queue is full",
        "QUEUE_FULL",
        "img_late",
    )
    assert rule.HasField("last_error_at")
    assert (await rules.list(other))[0].last_error == ""  # the other tenant's is untouched

    again = await rules.set(tenant, IMAGE, "thumb")
    assert again.last_error == "" and (await rules.list(tenant))[0].last_error == ""

    assert await delete_tenant_rules(pool, tenant) == 1
    assert await rules.list(tenant) == []
    assert len(await rules.list(other)) == 1
    await delete_tenant_rules(pool, other)
