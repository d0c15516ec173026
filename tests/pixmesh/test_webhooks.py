"""pixmesh.webhooks: the signature a receiver checks; and the jobs service's payload, headers and
retry schedule that produce it."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

import pixmesh
from pixmesh.common.v1 import job_pb2
from pixmesh.webhooks import Webhook, sign, to_webhook, verify
from services.jobs import webhooks
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import FakeGateway

BODY = b'{"event_id":"e1","type":"job.succeeded"}'
NOW = 1_800_000_000


def test_signature_is_stripe_style_hmac_of_timestamp_dot_body() -> None:
    header = sign(BODY, "key", NOW)
    expected = hmac.new(b"key", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_verify_accepts_the_right_key_body_and_time_only() -> None:
    header = sign(BODY, "key", NOW)
    assert verify(BODY, header, "key", now=NOW)
    assert verify(BODY, header, "key", now=NOW + 299)
    assert not verify(BODY, header, "other", now=NOW)
    assert not verify(BODY + b" ", header, "key", now=NOW)
    assert not verify(BODY, header, "key", now=NOW + 301)  # a replay, too old
    assert not verify(BODY, header, "key", tolerance_s=10, now=NOW + 11)
    assert not verify(BODY, header, "", now=NOW)


def test_verify_rejects_malformed_headers_and_accepts_any_v1() -> None:
    good = sign(BODY, "key", NOW)
    sig = good.split("v1=")[1]
    assert verify(BODY, f"t={NOW},v1={'0' * 64},v1={sig}", "key", now=NOW)
    for bad in ["", "garbage", f"v1={sig}", f"t={NOW}", f"t=abc,v1={sig}", f"t={NOW},v1=zz"]:
        assert not verify(BODY, bad, "key", now=NOW), bad


def test_backoff_doubles_caps_and_jitters() -> None:
    low = [webhooks.backoff_s(n, 10, 3600, rand=lambda: 0.0) for n in range(1, 11)]
    high = [webhooks.backoff_s(n, 10, 3600, rand=lambda: 1.0) for n in range(1, 11)]
    assert high[:4] == [10, 20, 40, 80]
    assert low[:4] == [5, 10, 20, 40]
    assert max(high) == 3600  # capped
    assert all(lo <= hi for lo, hi in zip(low, high, strict=True))
    assert 5 <= webhooks.backoff_s(1, 10, 3600) <= 10


def test_payload_is_the_rest_json_of_the_job() -> None:
    job = job_pb2.Job(job_id="job_1", state=job_pb2.Job.SUCCEEDED, image_id="img_1")
    job.webhook.url = "https://example.com/h"
    doc = json.loads(webhooks.payload("job_1.abc", job))
    assert doc["event_id"] == "job_1.abc"
    assert doc["type"] == "job.succeeded"
    assert doc["job"]["job_id"] == "job_1"
    assert doc["job"]["state"] == "SUCCEEDED"
    assert doc["job"]["idempotency_key"] == ""  # every field printed, proto names
    job.state = job_pb2.Job.FAILED
    assert json.loads(webhooks.payload("e", job))["type"] == "job.failed"
    job.state = job_pb2.Job.CANCELLED
    assert json.loads(webhooks.payload("e", job))["type"] == "job.cancelled"


def test_headers_sign_only_with_a_secret() -> None:
    signed = webhooks.headers("e1", BODY, "key", now=NOW)
    assert signed["Pixmesh-Event-Id"] == "e1"
    assert signed["User-Agent"] == "pixmesh-webhooks"
    assert signed["Content-Type"] == "application/json"
    assert verify(BODY, signed["Pixmesh-Signature"], "key", now=NOW)
    assert "Pixmesh-Signature" not in webhooks.headers("e1", BODY, None, now=NOW)


def test_to_webhook() -> None:
    assert to_webhook(None) is None
    assert to_webhook("https://a.example/h") == Webhook(url="https://a.example/h")
    hook = Webhook(url="https://a.example/h", secret="k")
    assert to_webhook(hook) == hook
    with pytest.raises(TypeError):
        to_webhook(42)  # type: ignore[arg-type]


def test_client_sends_the_webhook(sync_target: str, fake: FakeGateway) -> None:
    with pixmesh.Client(sync_target, api_key=API_KEY) as c:
        image = c.upload(b"pixels")
        c.create_job(image.image_id, ["resize=10x10"], webhook="https://a.example/h")
        c.create_job(
            image.image_id, ["resize=10x10"], webhook=Webhook(url="https://b/h", secret="k")
        )
        c.create_job(image.image_id, ["resize=10x10"])
    sent = fake.create_requests
    assert sent[0].webhook == Webhook(url="https://a.example/h")
    assert sent[1].webhook == Webhook(url="https://b/h", secret="k")
    assert not sent[2].HasField("webhook")


async def test_async_client_sends_the_webhook(aio_target: str, fake: FakeGateway) -> None:
    async with pixmesh.AsyncClient(aio_target, api_key=API_KEY) as c:
        image = await c.upload(b"pixels")
        await c.create_job(image.image_id, ["resize=10x10"], webhook="https://a.example/h")
    assert fake.create_requests[0].webhook.url == "https://a.example/h"
