"""Batches end to end over REST through Envoy (issue 12): a storage prefix of a second bucket
(a customer's, through a storage connection) with broken files, written to a destination
prefix; the summary; zip archives of a batch and of a job; refused connections and sources;
cancel. Real servers: the session stack (SeaweedFS, Postgres, NATS, the services)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
import uuid
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from PIL import Image

from deploy.local import Stack
from pixmesh.common.v1.batch_pb2 import BatchSummary
from pixmesh.webhooks import verify
from services.runtime.bus import Bus, task_durable
from services.runtime.lanes import BATCH_LANE
from tests.integration.rest import Json, Rest
from tests.integration.test_batch_cli import png_with
from tests.integration.test_webhooks import Receiver, receiver  # noqa: F401 (a fixture)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

PIPELINE: list[Json] = [
    {"resize": {"width": 64}},
    {"convert": {"format": "WEBP", "quality": 80}},
]


def _jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    img.putpixel((seed % size[0], 0), (seed % 256, 0, 0))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=80)
    return out.getvalue()


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 100), (seed % 256, 40, 90)).save(out, "PNG")
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wait(rest: Rest, batch_id: str, timeout: float = 60.0) -> Json:
    deadline = time.monotonic() + timeout
    while True:
        resp = rest.http.get(f"/v1/batches/{batch_id}")
        assert resp.status_code == 200, resp.text
        batch: Json = resp.json()["batch"]
        if batch["state"] != "RUNNING":
            return batch
        assert time.monotonic() < deadline, f"batch still running: {batch['progress']}"
        time.sleep(0.2)


def _reason(resp: Any) -> str:
    for detail in resp.json().get("details", []):
        if "reason" in detail:
            return str(detail["reason"])
    return ""


@pytest.fixture(scope="module")
def customer(stack: Stack, s3_client: S3Client) -> str:
    """A second bucket in the stack's SeaweedFS, acting as a customer's bucket."""
    bucket = f"customer-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    return bucket


def _connection(rest: Rest, stack: Stack, bucket: str, secret: str | None = None) -> Any:
    return rest.http.post(
        "/v1/storage-connections",
        json={
            "name": "customer",
            "endpoint": stack.s3_endpoint,
            "bucket": bucket,
            "region": "us-east-1",
            "credentials": {
                "access_key_id": stack.s3_access_key,
                "secret_access_key": secret or stack.s3_secret_key,
            },
        },
    )


def test_a_prefix_of_a_customer_bucket_with_broken_files(
    rest: Rest, stack: Stack, s3_client: S3Client, customer: str
) -> None:
    good = {
        "photos/a.jpg": _jpeg(1),
        "photos/trip/b.jpeg": _jpeg(2),
        "photos/trip/c.png": _png(3),
        # Named like a PNG, a JPEG by content: the content decides.
        "photos/d.png": _jpeg(4),
    }
    bad = {
        "photos/broken.jpg": _jpeg(5)[:200],
        "photos/empty.jpg": b"",
        "photos/notes.txt": b"not an image at all\n",
        # A header that reads over pixel data that does not; 400 megapixels in a few bytes.
        "photos/corrupt.png": png_with(64, 48, random.Random(5).randbytes(600)),
        "photos/huge.png": png_with(20_000, 20_000, zlib.compress(b"\x00" * 64)),
        # More bytes than an input may have (PIXMESH_MAX_INPUT_BYTES, 50 MiB): refused by the
        # listing's size, never read.
        "photos/big.jpg": b"\xff\xd8\xff\xe0" + bytes(50 * 2**20 - 3),
    }
    for key, data in {**good, **bad}.items():
        s3_client.put_object(Bucket=customer, Key=key, Body=data)
    s3_client.put_object(Bucket=customer, Key="elsewhere/x.jpg", Body=_jpeg(9))

    resp = _connection(rest, stack, customer)
    assert resp.status_code == 200, resp.text
    conn = resp.json()["connection"]
    assert conn["bucket"] == customer
    # The secret is write-only.
    assert stack.s3_secret_key not in resp.text
    listed = rest.http.get("/v1/storage-connections").json()["connections"]
    assert conn["connection_id"] in [c["connection_id"] for c in listed]
    assert stack.s3_secret_key not in str(listed)

    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"storage": {"connection_id": conn["connection_id"], "prefix": "photos/"}},
            "destination": {"connection_id": conn["connection_id"], "prefix": "out/"},
            "operations": PIPELINE,
            "idempotency_key": f"b-{uuid.uuid4().hex}",
        },
    )
    assert resp.status_code == 200, resp.text
    batch = resp.json()["batch"]
    assert batch["progress"]["total"] == "10"
    batch = _wait(rest, batch["batch_id"])
    assert batch["state"] == "SUCCEEDED"
    summary = batch["summary"]
    assert summary["images"] == "10"
    assert summary["succeeded"] == "4"
    assert summary["failed"] == "6"
    failed = {f["name"]: g["reason"] for g in summary["failures"] for f in g["failures"]}
    assert set(failed) == {
        "broken.jpg",
        "empty.jpg",
        "notes.txt",
        "corrupt.png",
        "huge.png",
        "big.jpg",
    }
    assert failed["big.jpg"] == "IMAGE_TOO_LARGE"
    assert failed["notes.txt"] == "UNSUPPORTED_FORMAT"
    assert failed["empty.jpg"] == "EMPTY_IMAGE"
    assert failed["broken.jpg"] == "IMAGE_CORRUPT"
    assert failed["corrupt.png"] == "IMAGE_CORRUPT"  # failed in imaging: its job is named
    assert failed["huge.png"] == "TOO_MANY_PIXELS"  # refused by its header, never a job
    jobs_of = {f["name"]: f.get("job_id", "") for g in summary["failures"] for f in g["failures"]}
    assert jobs_of["corrupt.png"] and not jobs_of["huge.png"]
    # The bytes of the images that reached a job: the good ones and the corrupt one.
    taken = [*good.values(), bad["photos/corrupt.png"]]
    assert int(summary["bytes_in"]) == sum(len(d) for d in taken)
    assert 0 < summary["compression_ratio"] < 1
    assert summary["images_per_second"] > 0
    assert summary["p95_seconds"] >= summary["p50_seconds"] > 0

    # The summary as a document of its own.
    # The summary as a document of its own: the format of a folder run's summary.json
    # (pixmesh.summaries: every field, counts as numbers).
    doc = rest.http.get(f"/v1/batches/{batch['batch_id']}/summary.json")
    assert doc.status_code == 200, doc.text
    document = doc.json()
    assert set(document) == {f.name for f in BatchSummary.DESCRIPTOR.fields}
    assert (document["images"], document["succeeded"], document["failed"]) == (10, 4, 6)
    assert document["source"] == f"{conn['connection_id']}:photos/"
    assert document["destination"] == f"{conn['connection_id']}:out/"
    assert document["batch_ids"] == [batch["batch_id"]]
    assert document["bytes_saved"] > 0 and document["error_rate_percent"] == 60.0
    assert document["max_seconds"] >= document["mean_seconds"] >= document["min_seconds"] > 0

    # Outputs under the destination prefix: relative path, new extension, WebP 64 px wide.
    written = s3_client.list_objects_v2(Bucket=customer, Prefix="out/").get("Contents", [])
    keys = sorted(o["Key"] for o in written)
    assert keys == ["out/a.webp", "out/d.webp", "out/trip/b.webp", "out/trip/c.webp"]
    outputs = {}
    for key in keys:
        data = s3_client.get_object(Bucket=customer, Key=key)["Body"].read()
        with Image.open(io.BytesIO(data)) as img:
            assert (img.format, img.width) == ("WEBP", 64)
        outputs[key.removeprefix("out/")] = _sha(data)

    # The batch's zip: members named like the destination's objects, the same bytes.
    resp = rest.http.get(f"/v1/batches/{batch['batch_id']}/archive")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(resp.content))
    assert archive.testzip() is None
    # In source order (the listing's key order): deterministic.
    assert archive.namelist() == ["a.webp", "d.webp", "trip/b.webp", "trip/c.webp"]
    assert {n: _sha(archive.read(n)) for n in archive.namelist()} == outputs

    # Failed images are listed with their reason; succeeded ones with their job.
    items = rest.http.get(f"/v1/batches/{batch['batch_id']}/jobs", params={"state": "FAILED"})
    assert sorted(i["name"] for i in items.json()["items"]) == sorted(failed)
    items = rest.http.get(f"/v1/batches/{batch['batch_id']}/jobs", params={"state": "SUCCEEDED"})
    jobs = [i["job_id"] for i in items.json()["items"]]
    assert len(jobs) == 4

    # The same key and request: the same batch.
    again = rest.http.post(
        "/v1/batches",
        json={
            "source": {"storage": {"connection_id": conn["connection_id"], "prefix": "photos/"}},
            "destination": {"connection_id": conn["connection_id"], "prefix": "out/"},
            "operations": PIPELINE,
            "idempotency_key": batch["idempotency_key"],
        },
    )
    assert again.json()["batch"]["batch_id"] == batch["batch_id"]


def test_a_job_archive_holds_its_renditions(rest: Rest) -> None:
    image = rest.upload(_jpeg(11, (400, 300)))
    resp = rest.http.post(
        "/v1/jobs",
        json={
            "image_id": image["image_id"],
            "renditions": [
                {"name": "small", "operations": [{"resize": {"width": 50}}]},
                {
                    "name": "web",
                    "operations": [{"resize": {"width": 120}}, {"convert": {"format": "WEBP"}}],
                },
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    job = rest.wait_job(resp.json()["job"]["job_id"])
    assert job["state"] == "SUCCEEDED"
    resp = rest.http.get(f"/v1/jobs/{job['job_id']}/archive")
    assert resp.status_code == 200, resp.text
    archive = zipfile.ZipFile(io.BytesIO(resp.content))
    stem = image.get("filename", "").rsplit(".", 1)[0] or image["image_id"]
    assert archive.namelist() == [f"{stem}/small.jpg", f"{stem}/web.webp"]
    by_name = {o["rendition"]: o["sha256"] for o in job["outputs"]}
    assert _sha(archive.read(f"{stem}/small.jpg")) == by_name["small"]
    assert _sha(archive.read(f"{stem}/web.webp")) == by_name["web"]


def test_listed_items_carry_their_jobs_outputs(rest: Rest, database_url: str) -> None:
    """ListBatchJobs gives a succeeded item its job's outputs as GetJob does (linked for REST),
    so a client downloads them without reading each job: recorded when the feeder settled the
    item, read from the job for one settled before they were recorded."""
    ids = [rest.upload(_jpeg(300 + i, (200, 150)))["image_id"] for i in range(2)]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"images": {"image_ids": ids}},
            "renditions": [
                {"name": "small", "operations": [{"resize": {"width": 40}}]},
                {"name": "web", "operations": PIPELINE},
            ],
        },
    )
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch"]["batch_id"]
    assert _wait(rest, batch_id)["state"] == "SUCCEEDED"

    def listed() -> list[Json]:
        resp = rest.http.get(f"/v1/batches/{batch_id}/jobs")
        assert resp.status_code == 200, resp.text
        items: list[Json] = resp.json()["items"]
        return items

    def job_outputs(job_id: str) -> list[Json]:
        outputs: list[Json] = rest.http.get(f"/v1/jobs/{job_id}").json()["job"]["outputs"]
        return outputs

    items = listed()
    assert [i["state"] for i in items] == ["SUCCEEDED", "SUCCEEDED"]
    for item in items:
        assert [o["rendition"] for o in item["outputs"]] == ["small", "web"]
        assert item["outputs"] == job_outputs(item["job_id"])
        for output in item["outputs"]:
            assert output["download_path"] == f"/v1/jobs/{item['job_id']}/outputs/{output['index']}"

    async def forget() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE jobs.batch_items SET job_outputs = NULL WHERE batch_id = $1 AND idx = 0",
                batch_id,
            )
        finally:
            await conn.close()

    asyncio.run(forget())
    again = listed()
    assert again[0]["outputs"] == job_outputs(again[0]["job_id"])
    assert again == items


def test_bad_connections_and_sources_are_refused_with_the_reason(
    rest: Rest, stack: Stack, customer: str
) -> None:
    resp = _connection(rest, stack, customer, secret="wrong-secret")
    assert resp.status_code == 400, resp.text
    assert _reason(resp) == "STORAGE_CREDENTIALS_REFUSED"
    resp = _connection(rest, stack, f"missing-{uuid.uuid4().hex[:8]}")
    assert resp.status_code == 400, resp.text
    assert _reason(resp) == "BUCKET_NOT_FOUND"

    conn = _connection(rest, stack, customer).json()["connection"]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"storage": {"connection_id": conn["connection_id"], "prefix": "nothing/"}},
            "operations": PIPELINE,
        },
    )
    assert resp.status_code == 400, resp.text
    assert _reason(resp) == "SOURCE_EMPTY"
    resp = rest.http.delete(f"/v1/storage-connections/{conn['connection_id']}")
    assert resp.status_code == 200, resp.text
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"storage": {"connection_id": conn["connection_id"], "prefix": "photos/"}},
            "operations": PIPELINE,
        },
    )
    assert resp.status_code == 404, resp.text


def test_a_prefix_with_no_images_fails_with_the_reason(
    rest: Rest, stack: Stack, s3_client: S3Client, customer: str
) -> None:
    """Objects, none of them an image: a clear error, not an empty success."""
    s3_client.put_object(Bucket=customer, Key="docs/readme.txt", Body=b"hello\n")
    s3_client.put_object(Bucket=customer, Key="docs/empty.jpg", Body=b"")
    conn = _connection(rest, stack, customer).json()["connection"]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"storage": {"connection_id": conn["connection_id"], "prefix": "docs/"}},
            "operations": PIPELINE,
        },
    )
    assert resp.status_code == 200, resp.text
    batch = _wait(rest, resp.json()["batch"]["batch_id"])
    assert batch["state"] == "FAILED"
    assert batch["error"]["reason"] == "SOURCE_HAS_NO_IMAGES"
    failed = {f["name"]: g["reason"] for g in batch["summary"]["failures"] for f in g["failures"]}
    assert failed == {"readme.txt": "UNSUPPORTED_FORMAT", "empty.jpg": "EMPTY_IMAGE"}


def _imaging_queue(nats_url: str) -> int:
    """Tasks on the imaging consumers (interactive and the batch lane) not yet acked
    (undelivered + in progress)."""

    async def depth() -> int:
        bus = await Bus.connect(nats_url, "pixmesh-test-batches")
        try:
            lanes = [task_durable("imaging"), task_durable("imaging", BATCH_LANE)]
            return sum([await bus.consumer_depth(durable) for durable in lanes])
        finally:
            await bus.close()

    return asyncio.run(depth())


def test_cancel_stops_a_batch_and_leaves_no_pending_job(
    rest: Rest, stack: Stack, nats_url: str
) -> None:
    ids = [rest.upload(_jpeg(100 + i, (640, 480)))["image_id"] for i in range(40)]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"images": {"image_ids": ids}},
            "operations": [{"resize": {"width": 300}}, {"convert": {"format": "PNG"}}],
        },
    )
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch"]["batch_id"]
    time.sleep(0.5)
    resp = rest.http.post(f"/v1/batches/{batch_id}:cancel", json={})
    assert resp.status_code == 200, resp.text
    batch = resp.json()["batch"]
    assert batch["state"] == "CANCELLED"
    progress = batch["progress"]
    assert [int(progress.get(k, 0)) for k in ("queued", "pending", "running")] == [0, 0, 0]
    assert int(progress.get("cancelled", 0)) > 0
    # Every job the batch created has ended; none is left pending or running.
    items = rest.http.get(f"/v1/batches/{batch_id}/jobs", params={"page_size": 1000}).json()
    created = [i["job_id"] for i in items["items"] if i.get("job_id")]
    # The window: never more than 16 jobs of the batch waiting, so most never got one.
    assert len(created) < len(ids)
    for job_id in created:
        state = rest.http.get(f"/v1/jobs/{job_id}").json()["job"]["state"]
        assert state in ("SUCCEEDED", "CANCELLED", "FAILED")
    summary = rest.http.get(f"/v1/batches/{batch_id}/summary.json").json()
    assert int(summary["cancelled"]) + int(summary.get("succeeded", 0)) == len(ids)
    # The tasks already queued (at most the window) are taken and dropped: the queue drains and
    # nothing of the batch is left pending.
    deadline = time.monotonic() + 60
    while _imaging_queue(nats_url):
        assert time.monotonic() < deadline, "the imaging queue did not drain after the cancel"
        time.sleep(0.2)
    still = rest.http.get(f"/v1/batches/{batch_id}/jobs", params={"state": "PENDING"}).json()
    assert still.get("items", []) == []


def _stored_batch_ids(database_url: str, job_ids: list[str]) -> list[str | None]:
    """jobs.jobs.batch_id of each job (what picks its tasks' lane, services/jobs/mapping.py)."""

    async def read() -> list[str | None]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT job_id, batch_id FROM jobs.jobs WHERE job_id = ANY($1::text[])", job_ids
            )
        finally:
            await conn.close()
        found = {r["job_id"]: r["batch_id"] for r in rows}
        return [found.get(j) for j in job_ids]

    return asyncio.run(read())


def test_a_prefix_of_the_tenants_own_area(
    rest: Rest, s3_client: S3Client, s3_bucket: str, database_url: str
) -> None:
    """Objects under tenants/<tenant>/ of the platform's bucket, no connection needed."""
    s3_client.put_object(Bucket=s3_bucket, Key="tenants/dev/imports/one.jpg", Body=_jpeg(31))
    s3_client.put_object(Bucket=s3_bucket, Key="tenants/dev/imports/two.png", Body=_png(32))
    s3_client.put_object(Bucket=s3_bucket, Key="tenants/other/imports/x.jpg", Body=_jpeg(33))
    resp = rest.http.post(
        "/v1/batches",
        json={"source": {"storage": {"prefix": "imports/"}}, "operations": PIPELINE},
    )
    assert resp.status_code == 200, resp.text
    batch = _wait(rest, resp.json()["batch"]["batch_id"])
    assert (batch["summary"]["images"], batch["summary"]["succeeded"]) == ("2", "2")
    archive = zipfile.ZipFile(
        io.BytesIO(rest.http.get(f"/v1/batches/{batch['batch_id']}/archive").content)
    )
    assert archive.namelist() == ["one.webp", "two.webp"]
    # The feeder created the jobs as the batch's: their tasks took the batch lane.
    items = rest.http.get(f"/v1/batches/{batch['batch_id']}/jobs").json()["items"]
    job_ids = [i["job_id"] for i in items]
    assert len(job_ids) == 2
    assert _stored_batch_ids(database_url, job_ids) == [batch["batch_id"]] * 2


def test_a_source_that_goes_away_fails_the_batch_with_the_reason(
    rest: Rest, stack: Stack, s3_client: S3Client, customer: str
) -> None:
    for i in range(8):
        s3_client.put_object(Bucket=customer, Key=f"gone/{i}.jpg", Body=_jpeg(40 + i))
    conn = _connection(rest, stack, customer).json()["connection"]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"storage": {"connection_id": conn["connection_id"], "prefix": "gone/"}},
            "operations": PIPELINE,
        },
    )
    assert resp.status_code == 200, resp.text
    # Deleted while the batch runs: its next round cannot read the source.
    assert rest.http.delete(f"/v1/storage-connections/{conn['connection_id']}").status_code == 200
    batch = _wait(rest, resp.json()["batch"]["batch_id"])
    if batch["state"] == "SUCCEEDED":  # every image was read before the delete
        assert batch["summary"]["succeeded"] == "8"
        return
    assert batch["state"] == "FAILED"
    assert batch["error"]["reason"] == "CONNECTION_NOT_FOUND"
    summary = batch["summary"]
    assert int(summary["cancelled"]) > 0
    assert int(summary.get("succeeded", 0)) + int(summary["cancelled"]) == 8


def test_a_batch_webhook_is_posted_once_signed_when_it_ends(
    rest: Rest,
    receiver: Receiver,  # noqa: F811 (the fixture of test_webhooks)
) -> None:
    ids = [rest.upload(_jpeg(60 + i))["image_id"] for i in range(3)]
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"images": {"image_ids": ids}},
            "operations": PIPELINE,
            "webhook": {"url": receiver.url, "secret": "whsec-batch"},
        },
    )
    assert resp.status_code == 200, resp.text
    batch = _wait(rest, resp.json()["batch"]["batch_id"])
    assert batch["webhook_url"] == receiver.url
    [(headers, body)] = receiver.wait(1)
    assert verify(body, headers["pixmesh-signature"], "whsec-batch")
    doc = json.loads(body)
    assert doc["type"] == "batch.succeeded"
    assert doc["batch"]["batch_id"] == batch["batch_id"]
    assert doc["batch"]["summary"]["succeeded"] == "3"
    assert "whsec-batch" not in body.decode()


def test_batch_items_page_tokens_are_checked(rest: Rest) -> None:
    # A token that is not ListBatchJobs' started again from the first item (a client paging
    # with it looped); a long number was a 500 (an int overflow in Postgres).
    ids = [rest.upload(_jpeg(70 + i, (40, 30)))["image_id"] for i in range(2)]
    resp = rest.http.post(
        "/v1/batches",
        json={"source": {"images": {"image_ids": ids}}, "operations": [{"grayscale": {}}]},
    )
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch"]["batch_id"]
    first = rest.http.get(f"/v1/batches/{batch_id}/jobs", params={"page_size": 1}).json()
    assert [i["index"] for i in first["items"]] == [0] and first["next_page_token"]
    token = first["next_page_token"]
    second = rest.http.get(
        f"/v1/batches/{batch_id}/jobs", params={"page_size": 1, "page_token": token}
    ).json()
    assert [i["index"] for i in second["items"]] == [1] and not second.get("next_page_token")
    for bad in ("garbage", "99999999999999999999", "-1", "9" * 5000):
        resp = rest.http.get(f"/v1/batches/{batch_id}/jobs", params={"page_token": bad})
        assert resp.status_code == 400, (bad[:30], resp.text)
        assert _reason(resp) == "BAD_PAGE_TOKEN"


def test_a_batch_archive_keeps_sources_differing_only_by_extension_apart(rest: Rest) -> None:
    # photo.png and photo.jpg both became "photo.webp" in the zip: one overwrote the other
    # when it was extracted. They keep their extension, as `pixmesh batch DIR` names them.
    ids = []
    for name, data in (("photo.png", _png(81)), ("photo.jpg", _jpeg(82, (40, 30)))):
        resp = rest.http.post(f"/v1/images?filename={name}", content=data)
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["image"]["image_id"])
    other = rest.http.post("/v1/images?filename=other.jpg", content=_jpeg(83, (40, 30)))
    ids.append(other.json()["image"]["image_id"])
    resp = rest.http.post(
        "/v1/batches",
        json={
            "source": {"images": {"image_ids": ids}},
            "operations": [{"convert": {"format": "WEBP"}}],
        },
    )
    assert resp.status_code == 200, resp.text
    batch = _wait(rest, resp.json()["batch"]["batch_id"])
    assert batch["state"] == "SUCCEEDED", batch
    resp = rest.http.get(f"/v1/batches/{batch['batch_id']}/archive")
    assert resp.status_code == 200, resp.text
    names = zipfile.ZipFile(io.BytesIO(resp.content)).namelist()
    assert names == ["photo.png.webp", "photo.jpg.webp", "other.webp"]
