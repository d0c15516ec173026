"""API keys and tenants: no key or a wrong key is 401; another tenant's job does not exist."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.rest import RESIZE_WEBP_METADATA, Rest, reason

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("headers", "expected_reason"),
    [
        ({}, "API_KEY_MISSING"),
        ({"authorization": "Bearer pm_wrong_key_0123456789"}, "API_KEY_INVALID"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "API_KEY_MISSING"),
    ],
    ids=["none", "wrong", "not-bearer"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/jobs"), ("POST", "/v1/images"), ("GET", "/v1/operations")],
)
def test_unauthenticated(
    rest_url: str,
    photo: bytes,
    headers: dict[str, str],
    expected_reason: str,
    method: str,
    path: str,
) -> None:
    body = photo if method == "POST" else None
    resp = httpx.request(method, rest_url + path, headers=headers, content=body, timeout=10)
    assert resp.status_code == 401, resp.text
    assert resp.json()["code"] == 16  # UNAUTHENTICATED
    assert reason(resp) == expected_reason


def test_other_tenant_cannot_see_the_job(rest: Rest, other_tenant: Rest, photo_id: str) -> None:
    job = rest.wait_job(rest.create_job(photo_id, RESIZE_WEBP_METADATA)["job_id"])
    assert job["state"] == "SUCCEEDED", job
    job_id = job["job_id"]

    for resp in (
        other_tenant.http.get(f"/v1/jobs/{job_id}"),
        other_tenant.http.get(f"/v1/jobs/{job_id}:watch"),
        other_tenant.download(job_id, 0),
        other_tenant.http.post(f"/v1/jobs/{job_id}:cancel", json={}),
    ):
        assert resp.status_code == 404, resp.text
        assert reason(resp) == "JOB_NOT_FOUND"
    assert job_id not in {j["job_id"] for j in other_tenant.list_all()}
    # Images are per tenant as well.
    resp = other_tenant.create_job_response(photo_id, [{"convert": {"format": "PNG"}}])
    assert resp.status_code == 404
    assert reason(resp) == "IMAGE_NOT_FOUND"
    # The owner still sees it.
    assert rest.get_job(job_id)["state"] == "SUCCEEDED"
