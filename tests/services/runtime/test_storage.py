"""Storage against the real SeaweedFS of the session stack (`infra`), and its per-call savings."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from deploy.local import Stack
from services.runtime.errors import NotFound, Unavailable
from services.runtime.settings import ServiceSettings
from services.runtime.storage import Storage, input_key

pytestmark = pytest.mark.integration


def _storage(infra: Stack, secret: str = "") -> Storage:
    """The stack's storage as a service makes it; `secret`: a wrong secret key instead."""
    settings = ServiceSettings(
        s3_endpoint=infra.s3_endpoint,
        s3_bucket=infra.s3_bucket,
        s3_access_key=SecretStr(infra.s3_access_key),
        s3_secret_key=SecretStr(secret or infra.s3_secret_key),
    )
    return Storage.from_settings(settings)


@pytest.fixture
def storage(infra: Stack) -> Storage:
    return _storage(infra)


def _headers_sent(storage: Storage) -> list[dict[str, str]]:
    """Records the headers of every request the client sends from now on."""
    sent: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append({k.lower(): str(v) for k, v in request.headers.items()})

    storage._s3.meta.events.register("before-send.s3", record)
    return sent


async def test_put_get_exists_roundtrip(storage: Storage) -> None:
    data = uuid.uuid4().bytes * 4096  # 64 KiB
    key = input_key(hashlib.sha256(data).hexdigest())
    assert not await storage.exists(key)
    await storage.put(key, data, "image/jpeg")
    assert await storage.exists(key)
    assert await storage.get(key) == data


async def test_missing_object_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound):
        await storage.get(f"inputs/missing-{uuid.uuid4().hex}")


async def test_a_missing_object_read_in_chunks_is_not_found(storage: Storage, infra: Stack) -> None:
    """An archive whose output was lost (the README's known limit) was INTERNAL: the chunks'
    NoSuchKey escaped unmapped."""
    with pytest.raises(NotFound) as err:
        list(storage.chunks(f"outputs/missing-{uuid.uuid4().hex}.webp"))
    assert err.value.reason == "OBJECT_NOT_FOUND"
    data = uuid.uuid4().bytes * 100
    key = input_key(hashlib.sha256(data).hexdigest())
    await storage.put(key, data, "image/png")
    assert b"".join(storage.chunks(key, 512)) == data
    with pytest.raises(Unavailable):  # refused (a wrong key): not INTERNAL either
        list(_storage(infra, secret="wrong").chunks(key))


async def test_no_flexible_checksum_on_put_or_get(storage: Storage) -> None:
    sent = _headers_sent(storage)
    key = f"tests/{uuid.uuid4().hex}"
    # A file: bytes skip the client (Direct), files still go through it; a GET through a
    # storage without Direct (an HTTPS endpoint's).
    await storage.put(key, io.BytesIO(b"x" * 100_000), "application/octet-stream")
    await Storage(storage._s3, storage.bucket).get(key)
    put, get = sent[-2], sent[-1]
    # botocore's default ("when_supported") adds a CRC32 of the body to every PUT and asks
    # for one back (x-amz-checksum-mode) on every GET, then checks it: CPU for nothing here.
    assert not [h for h in put if h.startswith("x-amz-checksum") or "sdk-checksum" in h], put
    assert "x-amz-checksum-mode" not in get, get


async def test_timestamps_are_not_parsed(storage: Storage) -> None:
    key = f"tests/{uuid.uuid4().hex}"
    await storage.put(key, b"x", "text/plain")
    head = await storage._call(storage._s3.head_object, Bucket=storage.bucket, Key=key)
    assert isinstance(head["LastModified"], str)


async def test_delete_many_removes_exactly_the_keys_given(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.runtime.storage.DELETE_BATCH", 3)  # several requests
    prefix = f"tests/{uuid.uuid4().hex}/"
    keys = [f"{prefix}{i}" for i in range(8)]
    for k in keys:
        await storage.put(k, b"x", "text/plain")
    sent = _headers_sent(storage)
    # A missing key among them is not an error (S3 semantics, as delete()).
    await storage.delete_many([*keys[:6], f"{prefix}missing"])
    assert len(sent) == 3  # 7 keys in requests of 3
    assert sorted(await storage.keys(prefix)) == keys[6:]
    await storage.delete_many([])
    assert sorted(await storage.keys(prefix)) == keys[6:]


async def test_a_put_of_bytes_skips_the_client_and_stores_what_it_would(storage: Storage) -> None:
    """Storage.put of bytes (Direct: a presigned PUT on urllib3, its headers signed) stores
    what a PUT through the client stores: the bytes, content type, user metadata; a file
    object still goes through the client."""
    sent = _headers_sent(storage)
    data = uuid.uuid4().bytes * 40_000  # 640 KB, a photo's WebP
    meta = {"sha256": hashlib.sha256(data).hexdigest(), "Size": str(len(data)), "format": "3"}
    direct, through_client = f"tests/put/{uuid.uuid4().hex}", f"tests/put/{uuid.uuid4().hex}"

    await storage.put(direct, data, "image/webp", meta)
    assert sent == []
    await storage.put(through_client, io.BytesIO(data), "image/webp", meta)
    assert len(sent) == 1

    assert await storage.get(direct) == data
    head, expected = await storage.head(direct), await storage.head(through_client)
    assert head is not None and head == expected
    assert (head.size, head.content_type) == (len(data), "image/webp")
    assert head.metadata == {"sha256": meta["sha256"], "size": str(len(data)), "format": "3"}
    # Metadata that is not ASCII is not a header S3 takes: the client refuses it, as before.
    with pytest.raises(Unavailable):
        await storage.put(f"tests/put/{uuid.uuid4().hex}", b"x", "text/plain", {"who": "Zoë"})


async def test_direct_put_refused_is_unavailable(infra: Stack) -> None:
    """A PUT answered 403 (a wrong secret) is a storage error, as it is through the client."""
    wrong = _storage(infra, secret="not-the-secret")
    assert wrong._direct is not None

    with pytest.raises(Unavailable) as err:
        await wrong.put("tests/put/anything", b"abc", "text/plain", {"sha256": "a" * 64})
    assert err.value.reason == "STORAGE_ERROR"
    with pytest.raises(Unavailable):
        await Storage(wrong._s3, wrong.bucket).put("tests/put/anything", b"abc", "text/plain")


async def test_direct_head_answers_as_the_client_does(storage: Storage, infra: Stack) -> None:
    """Storage.head (DirectHead: a presigned HEAD on urllib3) gives what a HEAD through the
    client gives: size, content type, user metadata by lower-case name; None when missing."""
    key = f"tests/head/{uuid.uuid4().hex}"
    meta = {"sha256": "a" * 64, "size": "3", "Trace-Id": "0" * 32}
    await storage.put(key, b"abc", "image/png", meta)
    through_client = Storage(storage._s3, storage.bucket)

    head = await storage.head(key)

    assert head is not None
    assert head == await through_client.head(key)
    assert (head.size, head.content_type) == (3, "image/png")
    assert head.metadata == {"sha256": "a" * 64, "size": "3", "trace-id": "0" * 32}
    assert await storage.head(key + ".missing") is None
    assert await through_client.head(key + ".missing") is None


async def test_direct_head_refused_is_unavailable(infra: Stack) -> None:
    """An answer other than 200 or 404 (here 403: a wrong secret) is a storage error, as it
    is through the client."""
    wrong = _storage(infra, secret="not-the-secret")

    with pytest.raises(Unavailable) as err:
        await wrong.head("tests/head/anything")
    assert err.value.reason == "STORAGE_ERROR"
    with pytest.raises(Unavailable):
        await Storage(wrong._s3, wrong.bucket).head("tests/head/anything")


async def test_a_get_skips_the_client_and_reads_what_it_would(
    storage: Storage, infra: Stack
) -> None:
    """Storage.get (Direct: a presigned GET on urllib3) returns the bytes a GET through the
    client returns; a missing object is NotFound either way; a refused GET (a wrong secret) is
    a storage error, as it is through the client."""
    sent = _headers_sent(storage)
    data = uuid.uuid4().bytes * 75_000  # 1.2 MB, an upload
    key = f"tests/get/{uuid.uuid4().hex}"
    await storage.put(key, data, "image/jpeg")
    through_client = Storage(storage._s3, storage.bucket)

    assert await storage.get(key) == data
    assert sent == []  # neither the PUT of bytes nor the GET went through the client
    assert await through_client.get(key) == data
    for s in (storage, through_client):
        with pytest.raises(NotFound):
            await s.get(key + ".missing")

    wrong = _storage(infra, secret="not-the-secret")
    with pytest.raises(Unavailable) as err:
        await wrong.get(key)
    assert err.value.reason == "STORAGE_ERROR"
    with pytest.raises(Unavailable):
        await Storage(wrong._s3, wrong.bucket).get(key)
