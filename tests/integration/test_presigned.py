"""Presigned URLs over REST against the real stack: the client PUTs straight to SeaweedFS's S3
and registers the upload through Envoy, and downloads an output from S3 with a signed GET."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

import pixmesh
import pixmesh.errors
from tests.integration.images import camera_jpeg
from tests.integration.rest import Rest, reason

pytestmark = pytest.mark.integration


def upload_url(rest: Rest, size: int, filename: str = "") -> httpx.Response:
    return rest.http.post("/v1/images:uploadUrl", json={"filename": filename, "size_bytes": size})


def put(ticket: dict[str, Any], data: bytes) -> httpx.Response:
    return httpx.put(ticket["url"], content=data, headers=ticket.get("headers", {}), timeout=30)


def register(rest: Rest, upload_id: str) -> httpx.Response:
    return rest.http.post("/v1/images:register", json={"upload_id": upload_id})


def test_upload_through_a_presigned_url(rest: Rest) -> None:
    data = camera_jpeg(640, 480)
    resp = upload_url(rest, len(data), "holiday.jpg")
    assert resp.status_code == 200, resp.text
    ticket = resp.json()
    assert ticket["upload_id"].startswith("upl_") and ticket["expires_at"]
    assert ticket["headers"] == {"Content-Length": str(len(data))}

    # Not yet uploaded: registering is refused, and says why.
    early = register(rest, ticket["upload_id"])
    assert early.status_code == 400, early.text  # FAILED_PRECONDITION
    assert reason(early) == "UPLOAD_MISSING"

    stored = put(ticket, data)
    assert stored.status_code == 200, stored.text

    resp = register(rest, ticket["upload_id"])
    assert resp.status_code == 200, resp.text
    image = resp.json()["image"]
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["width"], image["height"], image["format"]) == (640, 480, "JPEG")
    assert image["size_bytes"] == str(len(data)) and image["filename"] == "holiday.jpg"

    # A retry answers the same image (the staging object is gone by now).
    again = register(rest, ticket["upload_id"])
    assert again.status_code == 200, again.text
    assert again.json()["image"] == image
    # The same bytes uploaded the ordinary way are the same image.
    assert rest.upload(data)["image_id"] == image["image_id"]
    # And it is usable like any upload.
    job = rest.wait_job(
        rest.create_job(image["image_id"], [{"convert": {"format": "PNG"}}])["job_id"]
    )
    assert job["state"] == "SUCCEEDED", job


def test_the_url_only_takes_the_declared_size(rest: Rest) -> None:
    data = camera_jpeg(64, 48)
    ticket = upload_url(rest, len(data)).json()
    resp = httpx.put(ticket["url"], content=data + b"extra", timeout=30)
    assert resp.status_code == 403, resp.text  # Content-Length is signed
    assert reason(register(rest, ticket["upload_id"])) == "UPLOAD_MISSING"


def test_unknown_upload_is_not_found(rest: Rest) -> None:
    resp = register(rest, "upl_0123456789abcdef")
    assert resp.status_code == 404, resp.text
    assert reason(resp) == "UPLOAD_NOT_FOUND"


@pytest.mark.parametrize("size", [0, 10**12])
def test_declared_size_is_checked(rest: Rest, size: int) -> None:
    resp = upload_url(rest, size)
    assert resp.status_code == 400, resp.text
    # An empty file is refused as a direct upload refuses it (EMPTY_IMAGE).
    assert reason(resp) == ("EMPTY_IMAGE" if size == 0 else "IMAGE_TOO_LARGE")
    violations = [
        v["field"]
        for d in resp.json()["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["field_violations"]
    ]
    assert violations == ["size_bytes"]


def test_a_bad_image_is_refused_at_registration(rest: Rest) -> None:
    data = b"not an image at all"
    ticket = upload_url(rest, len(data)).json()
    assert put(ticket, data).status_code == 200
    resp = register(rest, ticket["upload_id"])
    assert resp.status_code == 400, resp.text
    assert reason(resp) == "UNSUPPORTED_FORMAT"


def test_another_tenant_cannot_register_my_upload(rest: Rest, other_tenant: Rest) -> None:
    data = camera_jpeg(96, 64)
    ticket = upload_url(rest, len(data)).json()
    assert put(ticket, data).status_code == 200

    resp = register(other_tenant, ticket["upload_id"])
    assert resp.status_code == 404, resp.text
    assert reason(resp) == "UPLOAD_NOT_FOUND"
    assert register(rest, ticket["upload_id"]).status_code == 200


def test_output_through_a_presigned_url(rest: Rest, other_tenant: Rest, photo_id: str) -> None:
    ops = [
        {"resize": {"width": 320, "height": 240, "mode": "FIT"}},
        {"convert": {"format": "WEBP"}},
    ]
    job = rest.wait_job(rest.create_job(photo_id, ops)["job_id"])
    assert job["state"] == "SUCCEEDED", job
    job_id = job["job_id"]

    resp = rest.http.get(f"/v1/jobs/{job_id}/outputs/0:url")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["expires_at"] and body["output"] == job["outputs"][0]

    direct = httpx.get(body["url"], timeout=30)
    assert direct.status_code == 200, direct.text
    assert direct.headers["content-type"] == "image/webp"
    through_envoy = rest.download(job_id, 0)
    assert through_envoy.status_code == 200
    assert direct.content == through_envoy.content
    assert hashlib.sha256(direct.content).hexdigest() == body["output"]["sha256"]

    # The same errors as DownloadOutput.
    missing = rest.http.get(f"/v1/jobs/{job_id}/outputs/7:url")
    assert (missing.status_code, reason(missing)) == (
        rest.download(job_id, 7).status_code,
        reason(rest.download(job_id, 7)),
    )
    assert missing.status_code in (400, 404)
    other = other_tenant.http.get(f"/v1/jobs/{job_id}/outputs/0:url")
    assert other.status_code == 404 and reason(other) == "JOB_NOT_FOUND"
    unknown = rest.http.get("/v1/jobs/job_does_not_exist/outputs/0:url")
    assert unknown.status_code == 404 and reason(unknown) == "JOB_NOT_FOUND"


def test_sdk_upload_via_url(grpc_target: str, api_key: str, tmp_path: Path) -> None:
    path = tmp_path / "sdk.jpg"
    path.write_bytes(camera_jpeg(200, 150, description="sdk presigned"))
    with pixmesh.Client(grpc_target, api_key, timeout=30) as client:
        image = client.upload_via_url(path)
        assert (image.width, image.height, image.filename) == (200, 150, "sdk.jpg")
        assert image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(pixmesh.errors.NotFound):
            client.output_url("job_does_not_exist", 0)
        (tmp_path / "empty.jpg").write_bytes(b"")
        with pytest.raises(pixmesh.errors.InvalidArgument) as empty:
            client.upload_via_url(tmp_path / "empty.jpg")
        assert empty.value.reason == "EMPTY_IMAGE"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_put_as_the_readme_shows(rest: Rest, tmp_path: Path) -> None:
    # The README's curl PUT (curl labels the body a form; only the signed Content-Length counts).
    data = camera_jpeg(120, 90, description="curl presigned")
    (tmp_path / "curl.jpg").write_bytes(data)
    ticket = upload_url(rest, len(data)).json()
    subprocess.run(
        ["curl", "-sf", "-X", "PUT", "--data-binary", f"@{tmp_path / 'curl.jpg'}", ticket["url"]],
        check=True,
        timeout=30,
    )
    image_json = register(rest, ticket["upload_id"]).json()["image"]
    assert image_json["sha256"] == hashlib.sha256(data).hexdigest()
