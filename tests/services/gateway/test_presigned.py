"""Presigned URLs in GatewayService: the declared size, the pending upload and its tenant,
registering through the upload path (once), the expiry clean-up, and output URLs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import asyncpg
import grpc
import pytest
from PIL import Image

from pixmesh.common.v1 import image_pb2, job_pb2
from pixmesh.jobs.v1 import jobs_pb2
from services.gateway import uploads
from services.gateway.repository import GatewayRepository, PendingUpload
from services.gateway.service import CLEANUP_BATCH, GatewayService, staging_key
from services.gateway.settings import GatewaySettings
from services.gateway.uploads import Upload
from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
)
from tests.services.gateway.fakes import rpc_error
from tests.services.imaging import videos


class Repo:
    """gateway.uploads and gateway.images in memory."""

    def __init__(self) -> None:
        self.uploads: dict[str, dict[str, Any]] = {}
        self.images: dict[str, image_pb2.Image] = {}

    async def create_upload(
        self, tenant_id: str, upload_id: str, filename: str, size_bytes: int, expires_at: datetime
    ) -> None:
        self.uploads[upload_id] = {
            "tenant_id": tenant_id,
            "filename": filename,
            "size_bytes": size_bytes,
            "expires_at": expires_at,
            "image_id": None,
        }

    async def get_upload(
        self, tenant_id: str, upload_id: str, grace_s: float
    ) -> PendingUpload | None:
        row = self.uploads.get(upload_id)
        if row is None or row["tenant_id"] != tenant_id:
            return None
        if row["expires_at"] + timedelta(seconds=grace_s) <= datetime.now(UTC):
            return None
        return PendingUpload(
            upload_id, row["filename"], row["size_bytes"], row["expires_at"], row["image_id"]
        )

    async def register_upload(self, tenant_id: str, upload_id: str, image_id: str) -> None:
        assert self.uploads[upload_id]["tenant_id"] == tenant_id
        self.uploads[upload_id]["image_id"] = image_id

    async def remove_expired_uploads(
        self,
        grace_s: float,
        limit: int,
        delete_objects: Callable[[list[tuple[str, str]]], Awaitable[None]],
    ) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
        rows = sorted(
            (row["expires_at"], row["tenant_id"], upload_id)
            for upload_id, row in self.uploads.items()
            if row["expires_at"] <= cutoff
        )
        claimed = [(tenant, upload_id) for _, tenant, upload_id in rows[:limit]]
        if claimed:
            await delete_objects(claimed)
        for _, upload_id in claimed:
            del self.uploads[upload_id]
        return len(claimed)

    async def save_image(
        self,
        tenant_id: str,
        image: image_pb2.Image,
        store: Callable[[bool], Awaitable[None]] | None = None,
    ) -> image_pb2.Image:
        if store is not None:
            await store(any(i.sha256 == image.sha256 for i in self.images.values()))
        saved = image_pb2.Image()
        saved.CopyFrom(image)
        saved.image_id = f"img_{image.sha256[:8]}"
        self.images.setdefault(saved.image_id, saved)
        return self.images[saved.image_id]

    async def get_image(self, tenant_id: str, image_id: str) -> image_pb2.Image | None:
        return self.images.get(image_id)


class Storage:
    """The bucket in memory; presigned URLs are strings naming what was signed."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []
        self.fail_deletes = False

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def size(self, key: str) -> int | None:
        return len(self.objects[key]) if key in self.objects else None

    async def get(self, key: str) -> bytes:
        self.reads.append(key)
        if key not in self.objects:
            raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND")
        return self.objects[key]

    def chunks(self, key: str, chunk_size: int = 4) -> Iterator[bytes]:
        self.reads.append(key)
        data = self.objects[key]  # a KeyError, as boto3 raises its own error for a missing key
        for at in range(0, len(data), chunk_size):
            yield data[at : at + chunk_size]

    async def put(self, key: str, data: bytes | IO[bytes], content_type: str) -> None:
        self.objects[key] = data if isinstance(data, bytes) else data.read()

    async def delete(self, key: str) -> None:
        if self.fail_deletes:
            raise Unavailable(message="object storage error", reason="STORAGE_ERROR")
        self.objects.pop(key, None)

    async def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            await self.delete(key)

    def presign_put(self, key: str, size_bytes: int, expires_s: int) -> str:
        return f"https://s3.example/PUT/{key}?size={size_bytes}&expires={expires_s}"

    def presign_get(self, key: str, content_type: str, expires_s: int) -> str:
        return f"https://s3.example/GET/{key}?type={content_type}&expires={expires_s}"


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, image_pb2.Image]] = []

    async def image_uploaded(self, tenant_id: str, image: image_pb2.Image) -> None:
        self.seen.append((tenant_id, image))


class Jobs:
    """GetOutput of the jobs service: job_1 has one PNG output."""

    OUTPUT = job_pb2.Output(index=0, content_type="image/png", sha256="cd" * 32, width=20)

    async def GetOutput(
        self, req: jobs_pb2.GetOutputRequest, timeout: float
    ) -> jobs_pb2.GetOutputResponse:
        if (req.tenant_id, req.job_id) != ("tenant-a", "job_1"):
            raise rpc_error(NotFound(message=f"job {req.job_id} not found", reason="JOB_NOT_FOUND"))
        if req.index != 0:
            raise rpc_error(NotFound(message="no such output", reason="OUTPUT_NOT_FOUND"))
        return jobs_pb2.GetOutputResponse(output=self.OUTPUT, key="outputs/abc.png")


def gateway(
    repo: Repo, storage: Storage, events: Events | None = None, **settings: Any
) -> GatewayService:
    return GatewayService(
        GatewaySettings(**settings),
        repo,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # idempotency
        storage,  # type: ignore[arg-type]
        Jobs(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]  # capabilities
        events or Events(),
        None,  # type: ignore[arg-type]  # planner
    )


def jpeg(width: int = 8, height: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "JPEG")
    return out.getvalue()


# ---- CreateUploadUrl --------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "reason"), [(0, "EMPTY_IMAGE"), (2048 + 1, "IMAGE_TOO_LARGE")])
async def test_the_declared_size_is_required_and_checked(size: int, reason: str) -> None:
    repo = Repo()
    service = gateway(repo, Storage(), max_input_bytes=2048, max_video_bytes=2048)

    with pytest.raises(InvalidArgument) as err:
        await service.create_upload_url("tenant-a", "a.jpg", size)

    assert err.value.reason == reason
    assert [v.field for v in err.value.violations] == ["size_bytes"]
    assert not repo.uploads


async def test_an_upload_url_is_recorded_for_its_tenant_and_signed_for_its_size() -> None:
    repo = Repo()
    service = gateway(repo, Storage(), upload_url_ttl_s=600)
    before = datetime.now(UTC)

    resp = await service.create_upload_url("tenant-a", "x" * 300, 2048)

    row = repo.uploads[resp.upload_id]
    assert resp.upload_id.startswith("upl_")
    assert (row["tenant_id"], row["filename"], row["size_bytes"]) == ("tenant-a", "x" * 255, 2048)
    assert before + timedelta(seconds=600) <= row["expires_at"]
    assert row["expires_at"] <= datetime.now(UTC) + timedelta(seconds=600)
    assert resp.expires_at.ToDatetime(UTC) == row["expires_at"]
    key = f"uploads/tenant-a/{resp.upload_id}"
    assert staging_key("tenant-a", resp.upload_id) == key
    assert resp.url == f"https://s3.example/PUT/{key}?size=2048&expires=600"
    assert dict(resp.headers) == {"Content-Length": "2048"}
    other = await service.create_upload_url("tenant-a", "", 2048)
    assert other.upload_id != resp.upload_id


# ---- RegisterUpload ---------------------------------------------------------------------------


async def test_register_runs_the_upload_path_once_and_deletes_the_staging_object() -> None:
    repo, storage, events = Repo(), Storage(), Events()
    service = gateway(repo, storage, events)
    data = jpeg(8, 6)
    ticket = await service.create_upload_url("tenant-a", "photo.jpg", len(data))
    key = staging_key("tenant-a", ticket.upload_id)
    storage.objects[key] = data

    image = await service.register_upload("tenant-a", ticket.upload_id)

    sha = hashlib.sha256(data).hexdigest()
    assert (image.sha256, image.width, image.height) == (sha, 8, 6)
    assert (image.format, image.content_type) == (image_pb2.JPEG, "image/jpeg")
    assert (image.size_bytes, image.filename) == (len(data), "photo.jpg")
    assert storage.objects == {f"inputs/{sha}": data}  # stored by hash; staging gone
    assert events.seen == [("tenant-a", image)]
    assert repo.uploads[ticket.upload_id]["image_id"] == image.image_id

    again = await service.register_upload("tenant-a", ticket.upload_id)

    assert again == image
    assert storage.reads == [key]  # the retry read nothing
    assert len(events.seen) == 1


@pytest.mark.parametrize("case", ["unknown", "other-tenant", "expired"])
async def test_register_an_upload_that_is_not_ours_is_not_found(case: str) -> None:
    repo, storage = Repo(), Storage()
    service = gateway(repo, storage, upload_register_grace_s=60)
    ticket = await service.create_upload_url("tenant-a", "", 100)
    storage.objects[staging_key("tenant-a", ticket.upload_id)] = jpeg()
    upload_id, tenant = ticket.upload_id, "tenant-a"
    if case == "unknown":
        upload_id = "upl_unknown"
    elif case == "other-tenant":
        tenant = "tenant-b"
    else:
        repo.uploads[upload_id]["expires_at"] = datetime.now(UTC) - timedelta(seconds=61)

    with pytest.raises(NotFound) as err:
        await service.register_upload(tenant, upload_id)

    assert err.value.reason == "UPLOAD_NOT_FOUND"
    assert not storage.reads


async def test_within_the_grace_period_an_expired_url_can_still_be_registered() -> None:
    repo, storage = Repo(), Storage()
    service = gateway(repo, storage, upload_register_grace_s=60)
    ticket = await service.create_upload_url("tenant-a", "", 100)
    storage.objects[staging_key("tenant-a", ticket.upload_id)] = jpeg()
    repo.uploads[ticket.upload_id]["expires_at"] = datetime.now(UTC) - timedelta(seconds=30)

    image = await service.register_upload("tenant-a", ticket.upload_id)

    assert image.width == 8


async def test_register_needs_an_upload_id_and_the_uploaded_object() -> None:
    service = gateway(Repo(), Storage())
    with pytest.raises(InvalidArgument) as invalid:
        await service.register_upload("tenant-a", "")
    assert [v.field for v in invalid.value.violations] == ["upload_id"]

    ticket = await service.create_upload_url("tenant-a", "", 100)
    with pytest.raises(FailedPrecondition) as missing:
        await service.register_upload("tenant-a", ticket.upload_id)
    assert missing.value.reason == "UPLOAD_MISSING"


async def test_an_object_over_the_limit_is_refused_before_it_is_read() -> None:
    repo, storage = Repo(), Storage()
    service = gateway(repo, storage, max_input_bytes=2048, max_video_bytes=2048)
    ticket = await service.create_upload_url("tenant-a", "", 2000)
    storage.objects[staging_key("tenant-a", ticket.upload_id)] = b"\xff" * 4096

    with pytest.raises(InvalidArgument) as err:
        await service.register_upload("tenant-a", ticket.upload_id)

    assert err.value.reason == "IMAGE_TOO_LARGE"
    assert not storage.reads


async def test_bytes_that_are_not_an_image_are_refused_like_an_upload() -> None:
    repo, storage, events = Repo(), Storage(), Events()
    service = gateway(repo, storage, events)
    ticket = await service.create_upload_url("tenant-a", "", 20)
    storage.objects[staging_key("tenant-a", ticket.upload_id)] = b"not an image, honest"

    with pytest.raises(InvalidArgument) as err:
        await service.register_upload("tenant-a", ticket.upload_id)

    assert err.value.reason == "UNSUPPORTED_FORMAT"
    assert repo.uploads[ticket.upload_id]["image_id"] is None
    assert not events.seen and not repo.images


async def test_a_failed_staging_delete_does_not_fail_the_registration() -> None:
    repo, storage = Repo(), Storage()
    service = gateway(repo, storage)
    ticket = await service.create_upload_url("tenant-a", "", 100)
    key = staging_key("tenant-a", ticket.upload_id)
    storage.objects[key] = jpeg()
    storage.fail_deletes = True

    image = await service.register_upload("tenant-a", ticket.upload_id)

    assert repo.uploads[ticket.upload_id]["image_id"] == image.image_id
    assert key in storage.objects  # left for the expiry clean-up


# ---- clean-up ---------------------------------------------------------------------------------


async def test_expired_uploads_are_cleaned_up_a_bounded_batch_at_a_time() -> None:
    repo, storage = Repo(), Storage()
    service = gateway(repo, storage, upload_register_grace_s=0)
    past = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(CLEANUP_BATCH + 5):
        await repo.create_upload("tenant-a", f"upl_old{i:02d}", "", 10, past)
        storage.objects[staging_key("tenant-a", f"upl_old{i:02d}")] = b"x"
    live = await service.create_upload_url("tenant-a", "", 10)
    storage.objects[staging_key("tenant-a", live.upload_id)] = b"y"
    if service._cleanup is not None:  # the pass CreateUploadUrl started
        await service._cleanup

    assert len(repo.uploads) == 5 + 1
    assert await service.clean_expired_uploads() == 5
    assert await service.clean_expired_uploads() == 0
    assert list(repo.uploads) == [live.upload_id]
    assert list(storage.objects) == [staging_key("tenant-a", live.upload_id)]


async def test_a_clean_up_that_cannot_delete_objects_keeps_the_rows() -> None:
    repo, storage = Repo(), Storage()
    service = gateway(repo, storage, upload_register_grace_s=0)
    await repo.create_upload("tenant-a", "upl_old", "", 10, datetime.now(UTC))
    storage.fail_deletes = True

    assert await service.clean_expired_uploads() == 0

    assert "upl_old" in repo.uploads  # tried again on a later pass


# ---- GetOutputUrl -----------------------------------------------------------------------------


async def test_output_url_signs_the_outputs_key_with_its_content_type() -> None:
    service = gateway(Repo(), Storage(), download_url_ttl_s=120)
    before = datetime.now(UTC)

    resp = await service.output_url("tenant-a", "job_1", 0, timeout=5.0)

    assert resp.url == "https://s3.example/GET/outputs/abc.png?type=image/png&expires=120"
    # The jobs service's output, with the REST path the gateway gives it.
    expected = job_pb2.Output(download_path="/v1/jobs/job_1/outputs/0")
    expected.MergeFrom(Jobs.OUTPUT)
    assert resp.output == expected
    expires = resp.expires_at.ToDatetime(UTC)
    assert before + timedelta(seconds=120) <= expires <= datetime.now(UTC) + timedelta(seconds=120)


@pytest.mark.parametrize(
    ("tenant", "job_id", "index", "reason"),
    [
        ("tenant-b", "job_1", 0, "JOB_NOT_FOUND"),
        ("tenant-a", "job_2", 0, "JOB_NOT_FOUND"),
        ("tenant-a", "job_1", 3, "OUTPUT_NOT_FOUND"),
    ],
)
async def test_output_url_passes_the_jobs_service_errors_on(
    tenant: str, job_id: str, index: int, reason: str
) -> None:
    service = gateway(Repo(), Storage())

    with pytest.raises(ServiceError) as err:
        await service.output_url(tenant, job_id, index, timeout=5.0)

    assert err.value.code == grpc.StatusCode.NOT_FOUND and err.value.reason == reason


# ---- the repository against the real Postgres of the session stack ----------------------------


@pytest.mark.integration
async def test_repository_uploads_against_postgres(gateway_pool: asyncpg.Pool) -> None:
    pool = gateway_pool
    repo = GatewayRepository(pool)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    await repo.create_key(tenant)
    await repo.create_key("tenant-other")
    now = datetime.now(UTC)
    live, late, gone = (f"upl_{uuid.uuid4().hex}" for _ in range(3))
    await repo.create_upload(tenant, live, "a.jpg", 123, now + timedelta(seconds=900))
    await repo.create_upload(tenant, late, "", 1, now - timedelta(seconds=30))
    await repo.create_upload(tenant, gone, "", 1, now - timedelta(seconds=120))

    pending = await repo.get_upload(tenant, live, 60)
    assert pending is not None
    assert (pending.filename, pending.size_bytes, pending.image_id) == ("a.jpg", 123, None)
    assert abs(pending.expires_at - (now + timedelta(seconds=900))) < timedelta(seconds=1)
    assert await repo.get_upload("tenant-other", live, 60) is None
    assert await repo.get_upload(tenant, late, 60) is not None  # within the grace period
    assert await repo.get_upload(tenant, gone, 60) is None

    image = await repo.save_image(tenant, image_pb2.Image(sha256=uuid.uuid4().hex * 2))
    await repo.register_upload(tenant, live, image.image_id)
    registered = await repo.get_upload(tenant, live, 60)
    assert registered is not None and registered.image_id == image.image_id

    seen: list[list[tuple[str, str]]] = []

    async def record(rows: list[tuple[str, str]]) -> None:
        seen.append(rows)

    async def fail(rows: list[tuple[str, str]]) -> None:
        raise OSError("S3 down")

    # Objects that could not be deleted keep their rows for a later pass.
    with pytest.raises(OSError):
        await repo.remove_expired_uploads(60, 100, fail)
    assert await repo.get_upload(tenant, gone, 1e6) is not None
    assert await repo.remove_expired_uploads(60, 100, record) >= 1
    assert (tenant, gone) in seen[0]
    assert {(tenant, live), (tenant, late)}.isdisjoint(seen[0])
    assert await repo.get_upload(tenant, gone, 1e6) is None
    assert await repo.remove_expired_uploads(60, 100, record) == 0

    # Two replicas cleaning up at once take different rows: the first holds its claim
    # while the second runs.
    olds = [f"upl_{uuid.uuid4().hex}" for _ in range(4)]
    for name in olds:
        await repo.create_upload(tenant, name, "", 1, now - timedelta(seconds=600))
    first_claimed = asyncio.Event()
    release = asyncio.Event()
    taken: dict[str, list[tuple[str, str]]] = {}

    async def slow(rows: list[tuple[str, str]]) -> None:
        taken["first"] = rows
        first_claimed.set()
        await release.wait()

    async def quick(rows: list[tuple[str, str]]) -> None:
        taken["second"] = rows

    first = asyncio.create_task(repo.remove_expired_uploads(60, 2, slow))
    await first_claimed.wait()
    second = await repo.remove_expired_uploads(60, 100, quick)
    release.set()
    assert await first == 2
    assert second == 2
    assert set(taken["first"]).isdisjoint(taken["second"])
    assert {u for _, u in taken["first"] + taken["second"]} == set(olds)
    assert await repo.get_upload(tenant, late, 0) is None  # no grace: expired


# ---- streamed uploads -------------------------------------------------------------------------


async def test_a_streamed_video_is_spooled_to_disk_and_stored_from_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(uploads, "SPOOL_MEMORY_BYTES", 1024)
    data = videos.clip_bytes(1.0)
    storage, events = Storage(), Events()
    service = gateway(Repo(), storage, events)

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 700):
            yield data[at : at + 700]

    with await service.collect(chunks()) as spool:
        assert not spool.in_memory  # on disk
        image = await service.upload("tenant-a", Upload(data=spool, filename="clip.mp4"))

    sha = hashlib.sha256(data).hexdigest()
    assert (image.kind, image.sha256, image.size_bytes) == (image_pb2.Image.VIDEO, sha, len(data))
    assert image.video.codec == "h264" and image.width > 0
    assert storage.objects == {f"inputs/{sha}": data}
    assert events.seen == [("tenant-a", image)]


async def test_a_stream_over_the_limit_is_refused_while_it_arrives() -> None:
    service = gateway(Repo(), Storage(), max_input_bytes=2048, max_video_bytes=2048)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10):
            sent += 1
            yield b"\0" * 1000

    with pytest.raises(InvalidArgument) as err:
        await service.collect(chunks())
    assert err.value.reason == "IMAGE_TOO_LARGE"
    assert sent == 3


async def test_a_stream_under_the_memory_limit_is_read_back_from_its_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(uploads, "SPOOL_MEMORY_BYTES", 4096)
    data = jpeg(64, 48)
    parts = [data[at : at + 300] for at in range(0, len(data), 300)]

    async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    service = gateway(Repo(), Storage())
    with await service.collect(chunks(parts)) as spool:
        assert spool.in_memory and len(parts) > 2
        assert (spool.head(10), spool.read(), spool.read()) == (data[:10], data, data)
        assert spool.sha256 == hashlib.sha256(data).hexdigest() and spool.size == len(data)
        assert spool.file.read() == data
    with await service.collect(chunks([data])) as spool:
        assert spool.read() is data  # one chunk: not copied
    big = data * (4096 // len(data) + 2)
    with await service.collect(chunks([big[:3000], big[3000:]])) as spool:
        assert not spool.in_memory  # past the limit: everything so far went to the file
        assert (spool.head(5), spool.read()) == (big[:5], big)
        assert spool.sha256 == hashlib.sha256(big).hexdigest()


class CountingStorage(Storage):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def exists(self, key: str) -> bool:
        self.calls.append("exists")
        return await super().exists(key)

    async def put(self, key: str, data: bytes | IO[bytes], content_type: str) -> None:
        self.calls.append("put")
        await super().put(key, data, content_type)


async def test_bytes_no_image_has_are_put_without_asking_storage_first() -> None:
    storage, repo = CountingStorage(), Repo()
    service = gateway(repo, storage)
    data = jpeg()
    key = f"inputs/{hashlib.sha256(data).hexdigest()}"
    first = await service.upload("tenant-a", Upload(data=data))
    assert storage.calls == ["put"] and storage.objects == {key: data}
    storage.calls.clear()
    assert await service.upload("tenant-a", Upload(data=data)) == first
    assert storage.calls == ["exists"]  # an image has them: stored already, not put again
    del storage.objects[key]
    storage.calls.clear()
    await service.upload("tenant-a", Upload(data=data))
    assert storage.calls == ["exists", "put"] and storage.objects == {key: data}


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "image/jpeg", ""],
)
async def test_an_image_sent_as_a_form_is_refused_with_how_to_send_it(content_type: str) -> None:
    """`curl -F file=@photo.jpg` (a multipart form around the file) and `curl -d @photo.jpg`
    (CR and LF stripped) were refused as "not an image" alone, which points at the file; the
    Content-Type the request declared says what went wrong."""
    service = gateway(Repo(), Storage())
    photo = jpeg()
    form = b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\n" + photo + b"\r\n--x--\r\n"
    stripped = photo.replace(b"\r", b"").replace(b"\n", b"")[:40]
    declared = content_type.split(";")[0]
    for body, reason in ((form, "UNSUPPORTED_FORMAT"), (stripped, "IMAGE_CORRUPT")):
        with pytest.raises(InvalidArgument) as err:
            await service.upload("tenant-a", Upload(data=body, content_type=content_type))
        assert err.value.reason == reason
        form_type = declared in ("multipart/form-data", "application/x-www-form-urlencoded")
        assert (f"Content-Type is {declared}" in err.value.message) == form_type
        assert ("--data-binary" in err.value.message) == form_type
    # An image is an image whatever the label says, and the limits' refusals keep their text.
    assert (await service.upload("tenant-a", Upload(data=photo, content_type=content_type))).width
    with pytest.raises(InvalidArgument) as err:
        await service.upload("tenant-a", Upload(data=b"", content_type=content_type))
    assert err.value.message == "the image is empty"


async def test_save_image_tells_the_store_whether_an_image_has_the_bytes(
    gateway_pool: asyncpg.Pool,
) -> None:
    pool = gateway_pool
    repo = GatewayRepository(pool)
    tenant, other = (f"tenant-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for name in (tenant, other):
        await repo.create_key(name)
    told: list[bool] = []

    async def store(known: bool) -> None:
        told.append(known)

    sha = uuid.uuid4().hex * 2
    image = await repo.save_image(tenant, image_pb2.Image(sha256=sha), store)
    await repo.save_image(other, image_pb2.Image(sha256=sha), store)
    await repo.save_image(tenant, image_pb2.Image(sha256=uuid.uuid4().hex * 2), store)
    assert told == [False, True, False]

    async def delete_sources(shas: list[str]) -> None:
        pass

    await repo.delete_images(tenant, [image.image_id], delete_sources)
    await repo.save_image(tenant, image_pb2.Image(sha256=sha), store)  # the other's row
    assert told[-1] is True
