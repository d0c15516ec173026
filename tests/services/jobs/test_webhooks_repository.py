"""Webhook deliveries against a real Postgres (tests/services/jobs/conftest.py): stored with the
job, due in the transaction that ends it, claimed once (SKIP LOCKED + lease), retried with
backoff, FAILED after the last attempt; and the delivery round of the service, its HTTP side an
httpx MockTransport (the receiver over real HTTP is tests/integration/test_webhooks.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import uuid
from typing import cast

import asyncpg
import httpx
import pytest

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.webhooks import verify
from services.jobs.repository import JobsRepository
from services.jobs.service import JobsService
from services.jobs.webhooks import WebhookPolicy
from services.runtime.bus import Bus
from services.runtime.pipeline import request_hash
from services.runtime.secrets import SecretBox, new_key

pytestmark = pytest.mark.integration

W = job_pb2.WebhookStatus
TENANT = "t-webhooks"


def image() -> image_pb2.Image:
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    return image_pb2.Image(image_id=f"img_{sha[:32]}", sha256=sha, format=image_pb2.JPEG)


OPS = [operations_pb2.Operation(resize=operations_pb2.Resize(width=100))]


async def create(
    service: JobsService, url: str = "https://example.com/hook", secret: str = ""
) -> job_pb2.Job:
    img = image()
    job, created = await service.create_job(
        TENANT,
        img,
        OPS,
        "",
        request_hash(img, OPS, webhook_url=url),
        webhook=job_pb2.Webhook(url=url, secret=secret),
    )
    assert created
    return job


async def claim_mine(service: JobsService, job_ids: set[str], lease_s: float = 60.0) -> list[str]:
    return [
        d.job_id for d in await service.webhook_store.claim(100, lease_s) if d.job_id in job_ids
    ]


async def test_stored_with_the_job_and_not_due_while_it_runs(service: JobsService) -> None:
    job = await create(service, secret="s3cret")
    assert job.webhook.url == "https://example.com/hook"
    assert job.webhook.state == W.PENDING
    got = await service.get_job(TENANT, job.job_id)
    assert got.webhook.url == "https://example.com/hook"
    assert got.webhook.state == W.PENDING and got.webhook.attempts == 0
    assert b"s3cret" not in got.SerializeToString()
    assert await claim_mine(service, {job.job_id}) == []
    # A job without a webhook has none.
    img = image()
    plain, _ = await service.create_job(TENANT, img, OPS, "", request_hash(img, OPS))
    assert not (await service.get_job(TENANT, plain.job_id)).HasField("webhook")


async def test_due_when_the_job_ends_claimed_once_then_delivered(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    job = await create(service, secret="s3cret")
    cancelled = await service.cancel_job(TENANT, job.job_id)
    assert cancelled.state == job_pb2.Job.CANCELLED
    claimed = [d for d in await service.webhook_store.claim(100, 60.0) if d.job_id == job.job_id]
    assert len(claimed) == 1
    d = claimed[0]
    assert (d.attempt, d.url, d.secret, d.tenant_id) == (1, job.webhook.url, "s3cret", TENANT)
    # The event id is the JobStateChanged that ended the job, written in the same transaction.
    msg_ids = await pool.fetch("SELECT msg_id FROM jobs.outbox WHERE msg_id = $1", d.event_id)
    assert len(msg_ids) == 1
    # Leased: a second claim (another replica) does not get it.
    assert await claim_mine(service, {job.job_id}) == []
    assert await service.webhook_store.record(job.job_id, 1, None, None) == "DELIVERED"
    got = await service.get_job(TENANT, job.job_id)
    assert got.webhook.state == W.DELIVERED
    assert got.webhook.attempts == 1
    assert got.webhook.HasField("delivered_at")
    assert await claim_mine(service, {job.job_id}) == []


async def test_retry_backoff_then_failed(repo: JobsRepository, service: JobsService) -> None:
    job = await create(service)
    await service.cancel_job(TENANT, job.job_id)
    assert await claim_mine(service, {job.job_id}) == [job.job_id]
    # Retried in an hour: not due now.
    assert await service.webhook_store.record(job.job_id, 1, "HTTP 503", 3600.0) == "PENDING"
    got = await service.get_job(TENANT, job.job_id)
    assert (got.webhook.state, got.webhook.attempts, got.webhook.last_error) == (
        W.PENDING,
        1,
        "HTTP 503",
    )
    assert await claim_mine(service, {job.job_id}) == []
    # Retried at once: due again, as attempt 2.
    await repo.pool.execute(
        "UPDATE jobs.webhook_deliveries SET next_attempt_at = now() WHERE job_id = $1",
        job.job_id,
    )
    claimed = [d for d in await service.webhook_store.claim(100, 60.0) if d.job_id == job.job_id]
    assert [d.attempt for d in claimed] == [2]
    # A stale outcome (attempt 1) is ignored.
    assert await service.webhook_store.record(job.job_id, 1, None, None) is None
    assert await service.webhook_store.record(job.job_id, 2, "timeout after 10 s", None) == "FAILED"
    got = await service.get_job(TENANT, job.job_id)
    assert (got.webhook.state, got.webhook.attempts, got.webhook.last_error) == (
        W.FAILED,
        2,
        "timeout after 10 s",
    )
    assert await claim_mine(service, {job.job_id}) == []


async def test_concurrent_claims_never_share_a_delivery(service: JobsService) -> None:
    jobs = [await create(service) for _ in range(6)]
    for job in jobs:
        await service.cancel_job(TENANT, job.job_id)
    ids = {j.job_id for j in jobs}
    a, b = await asyncio.gather(claim_mine(service, ids), claim_mine(service, ids))
    assert not set(a) & set(b)
    assert set(a) | set(b) == ids


def test_request_hash_counts_the_url_only_when_given() -> None:
    img = image()
    plain = request_hash(img, OPS)
    assert request_hash(img, OPS, webhook_url="") == plain
    with_url = request_hash(img, OPS, webhook_url="https://a.example/x")
    assert with_url != plain
    assert with_url != request_hash(img, OPS, webhook_url="https://b.example/x")


async def test_service_round_signs_and_records(repo: JobsRepository) -> None:
    seen: list[httpx.Request] = []
    answers = iter([500, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers))

    service = JobsService(
        repo,
        cast(Bus, None),
        webhook_policy=WebhookPolicy(
            secret="deployment-key",
            max_attempts=3,
            backoff_s=0.01,
            backoff_max_s=0.01,
            allow_private=True,  # receiver.example does not resolve
        ),
    )
    job = await create(service, url="https://receiver.example/hook")  # no secret of its own
    await service.cancel_job(TENANT, job.job_id)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        for _ in range(50):
            await service.deliver_due_webhooks(client)
            got = await service.get_job(TENANT, job.job_id)
            if got.webhook.state != W.PENDING:
                break
            await asyncio.sleep(0.02)
    mine = [r for r in seen if r.url == "https://receiver.example/hook"]
    assert len(mine) == 2
    assert got.webhook.state == W.DELIVERED and got.webhook.attempts == 2
    req = mine[-1]
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == "pixmesh-webhooks"
    assert verify(req.content, req.headers["pixmesh-signature"], "deployment-key")
    assert not verify(req.content, req.headers["pixmesh-signature"], "another-key")
    doc = json.loads(req.content)
    assert doc["type"] == "job.cancelled"
    assert doc["event_id"] == req.headers["pixmesh-event-id"]
    assert doc["job"]["job_id"] == job.job_id
    assert doc["job"]["state"] == "CANCELLED"
    assert "secret" not in doc["job"]["webhook"]


async def test_a_host_now_private_is_not_called(repo: JobsRepository) -> None:
    """DNS that changed after CreateJob: the address is checked again before each attempt."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    service = JobsService(
        repo, cast(Bus, None), webhook_policy=WebhookPolicy(max_attempts=1, backoff_s=0.01)
    )
    job = await create(service, url="https://127.0.0.1:9/hook")
    await service.cancel_job(TENANT, job.job_id)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await service.deliver_due_webhooks(client)
    got = await service.get_job(TENANT, job.job_id)
    assert got.webhook.state == W.FAILED
    assert "non-public address" in got.webhook.last_error
    assert not [r for r in seen if "127.0.0.1" in str(r.url)]


async def test_the_secret_is_sealed_at_rest(repo: JobsRepository) -> None:
    sealed = JobsRepository(repo.pool, job_timeout_s=600, secrets=SecretBox([new_key()]))
    sealing = JobsService(sealed, cast(Bus, None))
    job = await create(sealing, secret="whsec_plain")
    stored = await repo.pool.fetchval(
        "SELECT secret FROM jobs.webhook_deliveries WHERE job_id=$1", job.job_id
    )
    assert stored.startswith("fernet:") and "whsec_plain" not in stored
    await sealing.cancel_job(TENANT, job.job_id)
    (d,) = [d for d in await sealing.webhook_store.claim(100, 60) if d.job_id == job.job_id]
    assert d.secret == "whsec_plain"


async def test_delivery_connects_to_the_address_it_checked(
    repo: JobsRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host is resolved once (here: a public address), and the POST goes to that address
    with the host name in Host and SNI: a resolver that answers differently the second time
    (DNS rebinding to 127.0.0.1) is never asked again."""
    answers = iter(["93.184.215.14", "127.0.0.1"])

    async def getaddrinfo(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    service = JobsService(
        repo, cast(Bus, None), webhook_policy=WebhookPolicy(max_attempts=1, backoff_s=0.01)
    )
    job = await create(service, url="https://hooks.example.com:8443/hook")
    await service.cancel_job(TENANT, job.job_id)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        await service.deliver_due_webhooks(client)
    (req,) = [r for r in seen if r.url.path == "/hook" and r.url.port == 8443]
    assert str(req.url) == "https://93.184.215.14:8443/hook"
    assert req.headers["host"] == "hooks.example.com:8443"
    assert req.extensions["sni_hostname"] == "hooks.example.com"
    assert (await service.get_job(TENANT, job.job_id)).webhook.state == W.DELIVERED
