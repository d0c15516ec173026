"""Storage's presigned URLs (signed locally, for the endpoint clients reach) and size/delete;
the last tests use them against the real SeaweedFS of the session stack."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from deploy.local import Stack
from services.runtime.settings import ServiceSettings
from services.runtime.storage import Storage

SETTINGS = ServiceSettings(s3_endpoint="http://seaweedfs.internal:8333", s3_bucket="pix")


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_urls_are_signed_for_the_public_endpoint() -> None:
    storage = Storage.from_settings(SETTINGS, "https://files.example.com")

    url = storage.presign_put("uploads/t/upl_1", 1234, 900)

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "files.example.com",
        "/pix/uploads/t/upl_1",
    )
    q = query(url)
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"  # SigV4
    assert q["X-Amz-Expires"] == "900"
    assert q["X-Amz-SignedHeaders"].split(";") == ["content-length", "host"]


def test_without_a_public_endpoint_urls_use_the_services_one() -> None:
    storage = Storage.from_settings(SETTINGS)

    url = storage.presign_get("outputs/abc.webp", "image/webp", 60)

    assert urlsplit(url).netloc == "seaweedfs.internal:8333"
    q = query(url)
    assert q["response-content-type"] == "image/webp"
    assert q["X-Amz-Expires"] == "60"
    assert "response-content-type" not in query(storage.presign_get("outputs/x", "", 60))


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("inputs/" + "a" * 64, ""),
        ("outputs/abc.webp", "image/webp"),
        ("odd key/ü+x=1&y~z.png", "image/svg+xml; charset=utf-8"),
    ],
)
def test_get_urls_are_the_clients_own(key: str, content_type: str) -> None:
    """The direct signer (QuerySigner) gives the URL the client's generate_presigned_url gives."""
    fast = Storage.from_settings(SETTINGS, "https://files.example.com/")
    client = Storage(fast._s3, fast.bucket, fast._presigner)
    for _ in range(3):  # both in the same second (X-Amz-Date)
        second = int(time.time())
        ours, theirs = (
            fast.presign_get(key, content_type, 600),
            client.presign_get(key, content_type, 600),
        )
        if int(time.time()) == second:
            break
    assert ours == theirs


def test_signing_sends_nothing() -> None:
    storage = Storage.from_settings(SETTINGS)
    sent: list[object] = []
    storage._presigner.meta.events.register("before-send.s3", lambda **kw: sent.append(kw))

    storage.presign_put("uploads/t/upl_1", 10, 60)
    storage.presign_get("outputs/x.png", "image/png", 60)

    assert sent == []


@pytest.fixture
def storage(infra: Stack) -> Storage:
    settings = ServiceSettings(
        s3_endpoint=infra.s3_endpoint,
        s3_bucket=infra.s3_bucket,
        s3_access_key=SecretStr(infra.s3_access_key),
        s3_secret_key=SecretStr(infra.s3_secret_key),
    )
    return Storage.from_settings(settings)


@pytest.mark.integration
async def test_presigned_put_then_size_get_delete(storage: Storage) -> None:
    key = f"uploads/tests/{uuid.uuid4().hex}"
    data = uuid.uuid4().bytes * 64
    assert await storage.size(key) is None

    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.put(storage.presign_put(key, len(data), 60), content=data)
        assert resp.status_code == 200, resp.text
        assert await storage.size(key) == len(data)
        got = await http.get(storage.presign_get(key, "image/png", 60))
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "image/png"

    await storage.delete(key)
    assert await storage.size(key) is None
    await storage.delete(key)  # deleting it again is fine


@pytest.mark.integration
async def test_a_put_of_another_size_is_refused(storage: Storage) -> None:
    key = f"uploads/tests/{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.put(storage.presign_put(key, 10, 60), content=b"x" * 11)
    assert resp.status_code == 403, resp.text
    assert await storage.size(key) is None
