"""Bad input is the caller's fault: a clear 400 with a reason at upload when the header shows it,
otherwise a job that fails permanently with a reason (no retries, never stuck)."""

from __future__ import annotations

import random

import pytest

import pixmesh
from tests.integration import images
from tests.integration.rest import Rest, reason
from tests.services.runtime.test_imageprobe import tiff

pytestmark = pytest.mark.integration

RANDOM_BYTES = random.Random(20240601).randbytes(4096)


@pytest.mark.parametrize(
    ("kind", "reason_expected"),
    [
        ("truncated-header", "IMAGE_CORRUPT"),
        ("random-bytes", "UNSUPPORTED_FORMAT"),
        ("zero-bytes", "EMPTY_IMAGE"),
        ("float64-tiff", "UNSUPPORTED_FORMAT"),  # valid, but Pillow has no mode for it
    ],
)
def test_rejected_upload(rest: Rest, photo: bytes, kind: str, reason_expected: str) -> None:
    data = {
        "truncated-header": images.truncated_in_header(photo),
        "random-bytes": RANDOM_BYTES,
        "zero-bytes": b"",
        "float64-tiff": tiff(bits=64, sample_format=3, samples=1),
    }[kind]
    jobs_before = len(list(rest.list_all()))

    resp = rest.upload_response(data)

    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == 3  # INVALID_ARGUMENT
    assert body["message"]  # a client-safe explanation
    assert reason(resp) == reason_expected
    assert len(list(rest.list_all())) == jobs_before


def test_invalid_operation_is_rejected_before_a_job_exists(rest: Rest, photo_id: str) -> None:
    jobs_before = len(list(rest.list_all()))
    resp = rest.create_job_response(photo_id, [{"resize": {"width": 0, "height": 0}}])
    assert resp.status_code == 400, resp.text
    violations = [d for d in resp.json()["details"] if d["@type"].endswith("BadRequest")]
    assert violations[0]["field_violations"][0]["field"].startswith("operations[0].resize")

    resp = rest.create_job_response(photo_id, [{}])
    assert resp.status_code == 400
    assert reason(resp) == "UNKNOWN_OPERATION"
    assert len(list(rest.list_all())) == jobs_before


def test_unknown_image_is_404(rest: Rest) -> None:
    resp = rest.create_job_response(
        "img_00000000000000000000000000000000", [{"convert": {"format": "PNG"}}]
    )
    assert resp.status_code == 404
    assert reason(resp) == "IMAGE_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/%ff"),  # a path parameter
        ("GET", "/v1/jobs?page_token=%00%ff"),  # a query parameter
        ("GET", "/v1/jobs/%c3%28/archive"),  # a streamed answer
        ("POST", "/v1/images?filename=%ff"),  # beside a raw body
    ],
)
def test_a_string_that_is_not_utf8_is_400(rest: Rest, method: str, path: str) -> None:
    # Envoy's transcoder passes the bytes on; the gateway could not parse its request and
    # answered UNKNOWN with the parser's text (500).
    resp = rest.http.request(method, path, content=b"\xff\xd8\xff" if method == "POST" else None)
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 3  # INVALID_ARGUMENT
    assert reason(resp) == "INVALID_ARGUMENT"
    assert "DecodeError" not in resp.text


def test_a_nul_character_is_400(
    rest: Rest, photo: bytes, photo_id: str, grpc_target: str, api_key: str
) -> None:
    # Postgres text cannot hold U+0000: these were 500s (gateway and jobs service). (Envoy
    # refuses %00 in a path itself: a job id with one comes by gRPC.)
    with (
        pixmesh.Client(grpc_target, api_key=api_key) as client,
        pytest.raises(pixmesh.InvalidArgument),
    ):
        client.get_job("job_\x00")
    responses = [
        rest.http.post("/v1/images?filename=a%00.jpg", content=photo),
        rest.create_job_response(photo_id, [{"grayscale": {}}], idempotency_key="key\u0000"),
    ]
    for resp in responses:
        assert resp.status_code == 400, resp.text
        assert reason(resp) == "INVALID_ARGUMENT"


def test_large_request_headers_are_served_up_to_envoys_limit(rest: Rest) -> None:
    # Envoy passes every header on as gRPC metadata; the services' gRPC default (16 KiB) refused
    # 20 KB of headers (a browser's cookies on the console's origin) as 429 RESOURCE_EXHAUSTED,
    # which tells a client to retry. Up to Envoy's own limit (60 KiB) they are served; past
    # it Envoy answers 431.
    resp = rest.http.get("/v1/jobs/job_nope", headers={"x-big": "x" * 20_000})
    assert (resp.status_code, reason(resp)) == (404, "JOB_NOT_FOUND"), resp.text
    resp = rest.http.get("/v1/jobs/job_nope", headers={"x-big": "x" * 50_000})
    assert resp.status_code == 404, resp.text
    resp = rest.http.get("/v1/jobs/job_nope", headers={"x-big": "x" * 70_000})
    assert resp.status_code == 431, resp.text


def test_image_that_fails_to_decode_fails_the_job(rest: Rest, photo: bytes) -> None:
    # The header is intact, so the gateway (which never decodes pixels) accepts it ...
    broken = images.truncated_in_scan(photo)
    image = rest.upload(broken)
    assert (image["format"], image["width"], image["height"]) == ("JPEG", 1600, 1200)

    # ... and the imaging worker fails the job for good on its first try.
    job = rest.create_job(
        image["image_id"], [{"resize": {"width": 100}}, {"convert": {"format": "PNG"}}]
    )
    job = rest.wait_job(job["job_id"], timeout=30)

    assert job["state"] == "FAILED", job
    assert job["error"]["reason"] == "IMAGE_CORRUPT"
    assert job["error"]["code"] == "INVALID_ARGUMENT"
    assert job["error"]["message"]
    (stage,) = job["stages"]
    assert stage["state"] == "FAILED"
    assert stage["attempts"] == 1  # permanent: not retried
    assert stage["error"]["reason"] == "IMAGE_CORRUPT"
    assert not job.get("outputs")
    resp = rest.download(job["job_id"], 0)
    assert resp.status_code == 400  # FAILED_PRECONDITION: a failed job has nothing to download
    assert resp.json()["code"] == 9
