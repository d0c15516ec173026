"""Deletion and retention against the real stack (Postgres, SeaweedFS, the services), proved by
listing the bucket: DeleteImage removes a source's bytes, outputs and metadata unless another
tenant uploaded the same file (that tenant still downloads it); DeleteJob; DeleteTenantData;
retention deletes what is due and nothing else."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from PIL import Image
from prometheus_client import REGISTRY

import pixmesh
from deploy.local import Stack
from pixmesh import errors
from pixmesh.events.v1 import events_pb2
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from pixmesh.metadata.v1 import metadata_pb2_grpc
from services.gateway.deletion import Deletion
from services.gateway.repository import GatewayRepository
from services.runtime import db, metrics
from services.runtime.storage import Storage, input_key
from tests.integration.rest import Rest, reason

pytestmark = pytest.mark.integration

RESIZE: list[dict[str, Any]] = [
    {"resize": {"width": 40, "height": 30}},
    {"convert": {"format": "PNG"}},
]


def unique_jpeg() -> bytes:
    """A JPEG no other test uploads (random pixels): its sha256 is this test's alone."""
    img = Image.frombytes("RGB", (48, 36), os.urandom(48 * 36 * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _client(stack: Stack, tenant: str, scopes: str = "read,write") -> Rest:
    return Rest(stack.rest_url, stack.create_api_key(tenant, scopes))


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> Iterator[tuple[Rest, Rest]]:
    suffix = uuid.uuid4().hex[:8]
    a = _client(stack, f"del-a-{suffix}", "read,write,admin")
    b = _client(stack, f"del-b-{suffix}")
    yield a, b
    a.close()
    b.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, max_size=2)
    yield pool
    await pool.close()


async def output_keys(pool: asyncpg.Pool, job_id: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT output_key, rendition_outputs FROM jobs.stages WHERE job_id=$1", job_id
    )
    keys = {r["output_key"] for r in rows if r["output_key"]}
    for r in rows:
        if r["rendition_outputs"]:
            made = events_pb2.TaskCompleted.FromString(r["rendition_outputs"])
            keys |= {m.key for m in made.rendition_outputs}
    return keys


def image_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored(stack: Stack, key: str) -> bool:
    listed = stack.s3_client().list_objects_v2(Bucket=stack.s3_bucket, Prefix=key)
    return any(o["Key"] == key for o in listed.get("Contents", []))


def finished_job(client: Rest, image_id: str) -> str:
    job = client.create_job(image_id, RESIZE)
    assert client.wait_job(job["job_id"])["state"] == "SUCCEEDED"
    return str(job["job_id"])


async def test_delete_image_keeps_bytes_another_tenant_uploaded(
    stack: Stack, tenants: tuple[Rest, Rest], pool: asyncpg.Pool
) -> None:
    a, b = tenants
    photo = unique_jpeg()
    image_a, image_b = a.upload(photo), b.upload(photo)
    sha = image_a["sha256"]
    job_a, job_b = finished_job(a, image_a["image_id"]), finished_job(b, image_b["image_id"])
    shared = await output_keys(pool, job_a)
    assert shared and shared == await output_keys(pool, job_b)  # content-addressed: one object
    assert stored(stack, input_key(sha)) and all(stored(stack, k) for k in shared)

    resp = a.http.delete(f"/v1/images/{image_a['image_id']}")
    assert resp.status_code == 200, resp.text
    report = resp.json()["report"]
    assert report["images_deleted"] == 1 and report["jobs_deleted"] == 1
    assert report.get("objects_deleted", 0) == 0 and report["objects_kept"] == 1 + len(shared)
    # A's image and job are gone...
    assert a.http.get(f"/v1/jobs/{job_a}").status_code == 404
    assert a.http.get(f"/v1/images/{image_a['image_id']}/metadata").status_code == 404
    again = a.http.delete(f"/v1/images/{image_a['image_id']}")
    assert again.status_code == 404 and reason(again) == "IMAGE_NOT_FOUND"  # idempotent
    # ...B's identical upload and output stay, and B still downloads them.
    assert stored(stack, input_key(sha)) and all(stored(stack, k) for k in shared)
    download = b.download(job_b)
    assert download.status_code == 200 and download.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert b.http.get(f"/v1/images/{image_b['image_id']}/metadata").status_code in (200, 503)

    # The last owner deletes it: now the bytes leave the bucket.
    resp = b.http.delete(f"/v1/images/{image_b['image_id']}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["report"]["objects_deleted"] == 1 + len(shared)
    assert not stored(stack, input_key(sha)) and not any(stored(stack, k) for k in shared)
    listed = stack.s3_client().list_objects_v2(Bucket=stack.s3_bucket, Prefix=f"previews/{sha}")
    assert not listed.get("Contents")


async def test_delete_job_removes_only_its_own_outputs(
    stack: Stack, tenants: tuple[Rest, Rest], pool: asyncpg.Pool
) -> None:
    a, _ = tenants
    image = a.upload(unique_jpeg())
    first, second = finished_job(a, image["image_id"]), finished_job(a, image["image_id"])
    keys = await output_keys(pool, first)
    assert keys == await output_keys(pool, second)
    resp = a.http.delete(f"/v1/jobs/{first}")
    assert resp.status_code == 200 and resp.json()["report"]["jobs_deleted"] == 1
    assert all(stored(stack, k) for k in keys)  # the second job still uses them
    assert a.download(second).status_code == 200
    resp = a.http.delete(f"/v1/jobs/{second}")
    assert resp.json()["report"]["objects_deleted"] == len(keys)
    assert not any(stored(stack, k) for k in keys)
    assert stored(stack, input_key(image["sha256"]))  # the source is the image's, kept
    assert a.http.delete(f"/v1/jobs/{second}").status_code == 404


def test_a_read_key_cannot_delete(stack: Stack, tenants: tuple[Rest, Rest]) -> None:
    a, _ = tenants
    image = a.upload(unique_jpeg())
    tenant = f"del-r-{uuid.uuid4().hex[:8]}"
    reader = _client(stack, tenant, "read")
    assert reader.http.delete(f"/v1/images/{image['image_id']}").status_code == 403
    reader.close()


async def _deletion(stack: Stack, pool: asyncpg.Pool) -> AsyncIterator[Deletion]:
    jobs, metadata = (
        stack.service_channel("jobs", "test"),
        stack.service_channel("metadata", "test"),
    )

    async def announce(digest: str) -> None:
        return None

    try:
        yield Deletion(
            GatewayRepository(pool),
            Storage(stack.s3_client(), stack.s3_bucket),
            jobs_pb2_grpc.JobsServiceStub(jobs),
            metadata_pb2_grpc.MetadataServiceStub(metadata),
            announce,
        )
    finally:
        await jobs.close()
        await metadata.close()


def _removed(store: str) -> float:
    """This process's pixmesh_retention_removed_total for one store."""
    labels = {"service": metrics.service(), "store": store}
    return REGISTRY.get_sample_value("pixmesh_retention_removed_total", labels) or 0.0


async def test_retention_deletes_what_is_due_and_nothing_else(
    stack: Stack, tenants: tuple[Rest, Rest], pool: asyncpg.Pool
) -> None:
    tenant = f"del-ret-{uuid.uuid4().hex[:8]}"
    client = _client(stack, tenant)
    _, other = tenants
    old_image, new_image = client.upload(unique_jpeg()), client.upload(unique_jpeg())
    old_job = finished_job(client, new_image["image_id"])  # on the image kept, finished "long ago"
    new_job = finished_job(client, new_image["image_id"])
    gone_job = finished_job(client, old_image["image_id"])
    kept_elsewhere = other.upload(unique_jpeg())
    other_job = finished_job(other, kept_elsewhere["image_id"])
    await pool.execute(
        "UPDATE jobs.jobs SET finished_at = now() - interval '3 days' WHERE job_id = $1", old_job
    )
    await pool.execute(
        "UPDATE gateway.images SET created_at = now() - interval '3 days' WHERE image_id = $1",
        old_image["image_id"],
    )
    # The other tenant's rows are just as old: it has no retention, so nothing of it goes.
    await pool.execute(
        "UPDATE jobs.jobs SET finished_at = now() - interval '3 days' WHERE job_id = $1", other_job
    )
    await pool.execute(
        "UPDATE gateway.images SET created_at = now() - interval '3 days' WHERE image_id = $1",
        kept_elsewhere["image_id"],
    )
    stack.gateway_admin("set-retention", "--tenant", tenant, "--outputs", "1d", "--sources", "2d")
    old_keys, new_keys = await output_keys(pool, old_job), await output_keys(pool, new_job)
    assert old_keys == new_keys  # same image, same ops: one object, kept while new_job uses it
    gone_keys = await output_keys(pool, gone_job)

    removed = {k: _removed(k) for k in ("jobs", "images", "objects")}
    async for deletion in _deletion(stack, pool):
        report = await deletion.apply_retention(timeout=30)
    assert report.jobs_deleted >= 2 and report.images_deleted >= 1
    # pixmesh_retention_removed_total counts what the pass reported removed.
    assert _removed("jobs") - removed["jobs"] == report.jobs_deleted
    assert _removed("images") - removed["images"] == report.images_deleted
    assert _removed("objects") - removed["objects"] == report.objects_deleted

    assert client.http.get(f"/v1/jobs/{old_job}").status_code == 404  # finished 3 days ago
    assert client.http.get(f"/v1/jobs/{gone_job}").status_code == 404  # its image went
    assert client.get_job(new_job)["state"] == "SUCCEEDED"
    assert client.download(new_job).status_code == 200
    assert all(stored(stack, k) for k in new_keys)
    assert not stored(stack, input_key(old_image["sha256"]))
    assert not any(stored(stack, k) for k in gone_keys)
    assert stored(stack, input_key(new_image["sha256"]))
    # Nothing of the other tenant went.
    assert other.get_job(other_job)["state"] == "SUCCEEDED"
    assert stored(stack, input_key(kept_elsewhere["sha256"]))
    client.close()


async def test_retention_deletes_due_jobs_in_batches_oldest_first(
    stack: Stack, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = f"del-batch-{uuid.uuid4().hex[:8]}"
    client = _client(stack, tenant)
    image = client.upload(unique_jpeg())
    jobs = [finished_job(client, image["image_id"]) for _ in range(6)]
    *due, recent = jobs
    for age, job_id in enumerate(due):  # due[0] finished last, due[-1] first
        await pool.execute(
            "UPDATE jobs.jobs SET finished_at = now() - interval '3 days' - $2 * interval '1 minute'"
            " WHERE job_id = $1",
            job_id,
            age,
        )
    async for deletion in _deletion(stack, pool):
        # One batch of 2: the two finished first go, and nothing else.
        request = jobs_pb2.DeleteJobsRequest(tenant_id=tenant, limit=2)
        request.finished_before.FromDatetime(datetime.now(UTC) - timedelta(days=1))
        resp = await deletion.jobs.DeleteJobs(request, timeout=30)
        assert resp.jobs_deleted == 2
        left = {
            r["job_id"]
            for r in await pool.fetch("SELECT job_id FROM jobs.jobs WHERE tenant_id = $1", tenant)
        }
        assert left == set(jobs) - set(due[-2:])
        # A pass deletes the rest of what is due in batches of 2 (3 due: 2 + 1) and keeps the
        # job inside the retention, whose output (the same object) stays stored.
        monkeypatch.setattr("services.gateway.deletion.RETENTION_BATCH", 2)
        stack.gateway_admin("set-retention", "--tenant", tenant, "--outputs", "1d")
        await deletion.apply_retention(timeout=30)
    left = {
        r["job_id"]
        for r in await pool.fetch("SELECT job_id FROM jobs.jobs WHERE tenant_id = $1", tenant)
    }
    assert left == {recent}
    assert client.download(recent).status_code == 200
    client.close()


async def _metadata_rows(pool: asyncpg.Pool, tenant: str, shas: list[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT sha256 FROM metadata.image_metadata WHERE tenant_id = $1 AND sha256 = ANY($2)",
        tenant,
        shas,
    )
    return {r["sha256"] for r in rows}


async def test_retention_deletes_images_in_batches_and_waits_for_running_jobs(
    stack: Stack, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = f"del-img-{uuid.uuid4().hex[:8]}"
    client = _client(stack, tenant)
    images = [client.upload(unique_jpeg()) for _ in range(3)]
    shas = [i["sha256"] for i in images]
    jobs = [finished_job(client, i["image_id"]) for i in images]
    outputs = [await output_keys(pool, j) for j in jobs]
    # Wait for the uploads' metadata, so that its deletion is what the test sees.
    for _ in range(100):
        if await _metadata_rows(pool, tenant, shas) == set(shas):
            break
        await asyncio.sleep(0.1)
    assert await _metadata_rows(pool, tenant, shas) == set(shas)
    # The middle image has a job still running: it and everything of it waits.
    await pool.execute(
        "UPDATE jobs.jobs SET state = 'RUNNING', finished_at = NULL WHERE job_id = $1", jobs[1]
    )
    for age, image in enumerate(images):  # oldest first: images[0], [1], [2]
        await pool.execute(
            "UPDATE gateway.images SET created_at = now() - interval '3 days' - $2 * interval"
            " '1 minute' WHERE image_id = $1",
            image["image_id"],
            3 - age,
        )
    stack.gateway_admin("set-retention", "--tenant", tenant, "--sources", "2d")
    # Batches of 2: [0, 1] deletes 0 and keeps 1; [1, 2] deletes 2; [1] deletes nothing: done.
    monkeypatch.setattr("services.gateway.deletion.RETENTION_IMAGE_BATCH", 2)
    async for deletion in _deletion(stack, pool):
        report = await deletion.apply_retention(timeout=30)
    assert report.images_deleted == 2 and report.jobs_deleted == 2
    left = {
        r["image_id"]
        for r in await pool.fetch("SELECT image_id FROM gateway.images WHERE tenant_id=$1", tenant)
    }
    assert left == {images[1]["image_id"]}
    assert await _metadata_rows(pool, tenant, shas) == {shas[1]}
    assert [stored(stack, input_key(s)) for s in shas] == [False, True, False]
    assert not any(stored(stack, k) for k in outputs[0] | outputs[2])
    assert all(stored(stack, k) for k in outputs[1])
    assert client.http.get(f"/v1/jobs/{jobs[1]}").status_code == 200

    # Its job ends: the next pass takes it too.
    await pool.execute(
        "UPDATE jobs.jobs SET state = 'SUCCEEDED', finished_at = now() WHERE job_id = $1",
        jobs[1],
    )
    async for deletion in _deletion(stack, pool):
        report = await deletion.apply_retention(timeout=30)
    assert report.images_deleted == 1 and report.jobs_deleted == 1
    assert not stored(stack, input_key(shas[1]))
    assert not any(stored(stack, k) for k in outputs[1])
    assert await _metadata_rows(pool, tenant, shas) == set()
    client.close()


async def test_delete_tenant_data(stack: Stack, pool: asyncpg.Pool) -> None:
    tenant = f"del-all-{uuid.uuid4().hex[:8]}"
    admin = _client(stack, tenant, "read,write,admin")
    image = admin.upload(unique_jpeg())
    job = finished_job(admin, image["image_id"])
    keys = await output_keys(pool, job)
    # An upload rule (set in SQL: the session stack's gateway has no presets).
    await pool.execute(
        "INSERT INTO gateway.upload_rules (tenant_id, kind, preset) VALUES ($1, 1, 'thumb')", tenant
    )
    wrong = admin.http.post("/v1/tenant:deleteData", json={"confirm_tenant_id": "someone"})
    assert wrong.status_code == 400
    resp = admin.http.post(
        "/v1/tenant:deleteData", json={"confirm_tenant_id": tenant, "delete_keys": True}
    )
    assert resp.status_code == 200, resp.text
    report: dict[str, Any] = resp.json()["report"]
    assert report["images_deleted"] == 1 and report["jobs_deleted"] == 1
    assert not stored(stack, input_key(image["sha256"])) and not any(stored(stack, k) for k in keys)
    assert (
        await pool.fetchval("SELECT count(*) FROM gateway.images WHERE tenant_id=$1", tenant) == 0
    )
    # Its upload rules went too (left behind, they would run on its next uploads).
    rules = "SELECT count(*) FROM gateway.upload_rules WHERE tenant_id=$1"
    assert await pool.fetchval(rules, tenant) == 0
    # Its keys were revoked with the data.
    assert admin.http.get("/v1/jobs").status_code == 401
    admin.close()


def _batch_jobs(client: Rest, prefix: str) -> dict[str, str]:
    """A batch over `prefix` of the tenant's own area, to its end: file name -> job id."""
    body = {"source": {"storage": {"prefix": prefix}}, "operations": RESIZE}
    resp = client.http.post("/v1/batches", json=body)
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch"]["batch_id"]
    for _ in range(300):
        batch = client.http.get(f"/v1/batches/{batch_id}").json()["batch"]
        if batch["state"] != "RUNNING":
            break
        time.sleep(0.1)
    assert batch["state"] == "SUCCEEDED", batch
    items = client.http.get(f"/v1/batches/{batch_id}/jobs").json()["items"]
    return {i["name"]: i["job_id"] for i in items}


async def test_a_batch_source_goes_with_the_last_job_that_read_it(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    """An object a batch took from a storage prefix has no image row: its stored copy goes with
    the last job that read it, unless an image of the same bytes still needs it."""
    tenant = f"del-batch-{uuid.uuid4().hex[:8]}"
    admin = _client(stack, tenant, "read,write,admin")
    alone, shared = unique_jpeg(), unique_jpeg()
    image = admin.upload(shared)  # the same bytes as one of the prefix's objects
    s3 = stack.s3_client()
    for name, data in (("alone.jpg", alone), ("shared.jpg", shared)):
        s3.put_object(Bucket=stack.s3_bucket, Key=f"tenants/{tenant}/in/{name}", Body=data)
    jobs = _batch_jobs(admin, "in/")
    alone_key, shared_key = input_key(image_sha(alone)), input_key(image["sha256"])
    assert stored(stack, alone_key) and stored(stack, shared_key)
    outputs = await output_keys(pool, jobs["alone.jpg"])

    resp = admin.http.delete(f"/v1/jobs/{jobs['alone.jpg']}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["report"]["objects_deleted"] == len(outputs) + 1  # outputs + the source
    assert not stored(stack, alone_key) and not any(stored(stack, k) for k in outputs)

    resp = admin.http.delete(f"/v1/jobs/{jobs['shared.jpg']}")
    assert resp.status_code == 200, resp.text
    assert stored(stack, shared_key)  # the uploaded image still has these bytes
    assert admin.http.get(f"/v1/images/{image['image_id']}/content").status_code == 200

    # Tenant deletion takes what is left; the prefix's own objects are the tenant's to keep.
    resp = admin.http.post("/v1/tenant:deleteData", json={"confirm_tenant_id": tenant})
    assert resp.status_code == 200, resp.text
    assert not stored(stack, shared_key)
    assert stored(stack, f"tenants/{tenant}/in/alone.jpg")
    admin.close()


def test_the_sdk_deletes_an_image(grpc_target: str, stack: Stack) -> None:
    key = stack.create_api_key(f"del-sdk-{uuid.uuid4().hex[:8]}")
    with pixmesh.Client(grpc_target, key, timeout=30) as client:
        image = client.upload(unique_jpeg())
        report = client.delete_image(image.image_id)
        assert (report.images_deleted, report.objects_deleted) == (1, 1)
        assert not stored(stack, input_key(image.sha256))
        with pytest.raises(errors.NotFound):
            client.delete_image(image.image_id)
