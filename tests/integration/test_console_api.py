"""The public API the web console needs, over REST through Envoy: who am I, the source bytes and
a preview of an upload, dead letters and their replay (admin scope), CORS on presigned URLs."""

from __future__ import annotations

import hashlib
import io
import time
import uuid

import httpx
import pytest
from PIL import Image

from deploy.local import Stack
from tests.integration import images
from tests.integration.rest import Rest, reason

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def admin(stack: Stack, rest_url: str) -> Rest:
    return Rest(rest_url, stack.create_api_key("console-api", "read,write,admin"))


@pytest.fixture(scope="module")
def reader(stack: Stack, rest_url: str) -> Rest:
    return Rest(rest_url, stack.create_api_key("console-api", "read"))


def test_get_caller_names_tenant_key_and_scopes(admin: Rest, reader: Rest, rest_url: str) -> None:
    me = admin.http.get("/v1/me").json()
    assert me["tenant_id"] == "console-api"
    assert me["key_id"].startswith("key_")
    assert me["scopes"] == ["admin", "read", "write"]
    assert reader.http.get("/v1/me").json()["scopes"] == ["read"]
    bad = httpx.get(f"{rest_url}/v1/me", headers={"authorization": "Bearer pm_nope"})
    assert bad.status_code == 401 and reason(bad) == "API_KEY_INVALID"


def test_source_download_and_preview(admin: Rest, reader: Rest, other_tenant: Rest) -> None:
    photo = images.camera_jpeg(1600, 1200, description=uuid.uuid4().hex)
    image = admin.upload(photo)
    source = reader.http.get(f"/v1/images/{image['image_id']}/content")  # read scope suffices
    assert source.status_code == 200
    assert source.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(source.content).hexdigest() == image["sha256"]

    preview = admin.http.get(f"/v1/images/{image['image_id']}/preview", params={"max_size": 200})
    assert preview.status_code == 200, preview.text
    assert preview.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(preview.content)) as im:
        assert (im.format, im.size) == ("WEBP", (200, 150))
    again = admin.http.get(f"/v1/images/{image['image_id']}/preview", params={"max_size": 200})
    assert again.content == preview.content  # kept, not rendered differently
    too_big = admin.http.get(f"/v1/images/{image['image_id']}/preview", params={"max_size": 5000})
    assert too_big.status_code == 400

    # Tenancy: another tenant gets 404 for both.
    for path in ("content", "preview"):
        resp = other_tenant.http.get(f"/v1/images/{image['image_id']}/{path}")
        assert resp.status_code == 404, path


def test_dead_letters_are_listed_and_replayed_by_admins_only(
    admin: Rest, reader: Rest, photo: bytes
) -> None:
    broken = admin.upload(images.truncated_in_scan(images.camera_jpeg(800, 600, uuid.uuid4().hex)))
    job = admin.create_job(broken["image_id"], [{"resize": {"width": 100}}])
    job = admin.wait_job(job["job_id"], timeout=30)
    assert job["state"] == "FAILED"

    deadline = time.monotonic() + 15
    while True:
        resp = admin.http.get("/v1/deadLetters", params={"page_size": 20})
        assert resp.status_code == 200, resp.text
        mine = [d for d in resp.json()["dead_letters"] if d["job_id"] == job["job_id"]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (letter,) = mine
    assert letter["service"] == "imaging"
    assert letter["tenant_id"] == "console-api"
    assert letter["error"]["reason"] == "IMAGE_CORRUPT"
    seqs = [int(d["seq"]) for d in resp.json()["dead_letters"]]
    assert seqs == sorted(seqs, reverse=True)  # newest first

    denied = reader.http.get("/v1/deadLetters")
    assert denied.status_code == 403 and reason(denied) == "SCOPE_MISSING"
    denied = reader.http.post(f"/v1/jobs/{job['job_id']}:replay", json={})
    assert denied.status_code == 403

    replayed = admin.http.post(f"/v1/jobs/{job['job_id']}:replay", json={})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["job"]["state"] in ("PENDING", "RUNNING")
    again = admin.wait_job(job["job_id"], timeout=30)  # the bytes are still broken
    assert again["state"] == "FAILED"
    assert max(s["attempts"] for s in again["stages"]) >= 1

    ok = admin.create_job(admin.upload(photo)["image_id"], [{"resize": {"width": 64}}])
    ok = admin.wait_job(ok["job_id"])
    not_failed = admin.http.post(f"/v1/jobs/{ok['job_id']}:replay", json={})
    assert not_failed.status_code == 400  # FAILED_PRECONDITION


def test_presigned_urls_allow_the_console_origin_only(stack: Stack, admin: Rest) -> None:
    upload = admin.http.post("/v1/images:uploadUrl", json={"filename": "a.jpg", "size_bytes": 10})
    url = upload.json()["url"]
    preflight = {"access-control-request-method": "PUT"}
    console = httpx.options(url, headers={"origin": stack.rest_url, **preflight})
    assert console.headers.get("access-control-allow-origin") == stack.rest_url
    assert "PUT" in console.headers.get("access-control-allow-methods", "")
    other = httpx.options(url, headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_fleet_status_reports_job_latency_percentiles(admin: Rest, photo: bytes) -> None:
    job = admin.create_job(admin.upload(photo)["image_id"], [{"resize": {"width": 32}}])
    assert admin.wait_job(job["job_id"])["state"] == "SUCCEEDED"
    jobs = admin.http.get("/v1/fleet").json()["status"]["jobs"]
    p50, p95 = float(jobs["latency_p50"].rstrip("s")), float(jobs["latency_p95"].rstrip("s"))
    assert 0 < p50 <= p95 < 600
