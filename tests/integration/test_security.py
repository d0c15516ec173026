"""Security against the real stack, through Envoy: scopes, API keys over REST and the CLI,
per-tenant rate limits (429 + Retry-After, other tenants unaffected), dependency outages as 503.

Revocation and rotation across two gateway replicas: tests/integration/test_keys_cluster.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest

import pixmesh
from deploy.local import Stack
from pixmesh import errors

pytestmark = pytest.mark.integration

RESIZE = [{"resize": {"width": 32, "height": 32}}]


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def tenant_admin(stack: Stack) -> tuple[str, str]:
    """A fresh tenant and a key of it with every scope."""
    tenant = f"sec-{uuid.uuid4().hex[:8]}"
    return tenant, stack.create_api_key(tenant, "read,write,admin")


@pytest.fixture(scope="module")
def http(rest_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest_url, timeout=30) as client:
        yield client


def test_a_read_scope_key_cannot_create_jobs_or_upload(
    stack: Stack, http: httpx.Client, photo: bytes, photo_id: str
) -> None:
    reader = stack.create_api_key("dev", "read")
    job = http.post(
        "/v1/jobs", json={"image_id": photo_id, "operations": RESIZE}, headers=_auth(reader)
    )
    assert job.status_code == 403, job.text
    assert job.json()["details"][0]["reason"] == "SCOPE_MISSING"
    assert job.json()["details"][0]["metadata"]["scope"] == "write"
    upload = http.post(
        "/v1/images", content=photo, headers={**_auth(reader), "content-type": "image/jpeg"}
    )
    assert upload.status_code == 403
    assert http.get("/v1/jobs", headers=_auth(reader)).status_code == 200
    # Without the admin scope, no key management.
    assert http.get("/v1/keys", headers=_auth(reader)).status_code == 403


def test_keys_over_rest_create_list_revoke(
    http: httpx.Client, tenant_admin: tuple[str, str]
) -> None:
    _, admin = tenant_admin
    made = http.post(
        "/v1/keys", json={"name": "ci", "scopes": ["read"], "ttl": "3600s"}, headers=_auth(admin)
    )
    assert made.status_code == 200, made.text
    secret, key = made.json()["secret"], made.json()["key"]
    assert secret.startswith("pm_") and key["prefix"] == secret[:11]
    assert key["scopes"] == ["read"] and key["name"] == "ci" and "expires_at" in key
    assert http.get("/v1/operations", headers=_auth(secret)).status_code == 200
    listed = http.get("/v1/keys", headers=_auth(admin)).json()["keys"]
    mine = next(k for k in listed if k["key_id"] == key["key_id"])
    assert "last_used_at" in mine and secret not in str(listed)
    revoked = http.post(f"/v1/keys/{key['key_id']}:revoke", json={}, headers=_auth(admin))
    assert revoked.status_code == 200 and "revoked_at" in revoked.json()["key"]
    # This replica dropped it from its cache at once.
    after = http.get("/v1/operations", headers=_auth(secret))
    assert after.status_code == 401 and after.json()["details"][0]["reason"] == "API_KEY_INVALID"
    assert key["key_id"] not in str(http.get("/v1/keys", headers=_auth(admin)).json())
    bad = http.post("/v1/keys", json={"scopes": ["root"]}, headers=_auth(admin))
    assert bad.status_code == 400


def test_another_tenants_key_id_is_not_found(
    http: httpx.Client, tenant_admin: tuple[str, str], admin_key: str
) -> None:
    made = http.post("/v1/keys", json={"name": "x"}, headers=_auth(tenant_admin[1])).json()
    other = http.post(f"/v1/keys/{made['key']['key_id']}:revoke", json={}, headers=_auth(admin_key))
    assert other.status_code == 404 and other.json()["details"][0]["reason"] == "API_KEY_NOT_FOUND"
    assert http.get("/v1/operations", headers=_auth(made["secret"])).status_code == 200


def test_pixmesh_keys_cli(grpc_target: str, tenant_admin: tuple[str, str], tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("pixmesh")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "pixmesh.cli"]
    env = {**os.environ, "PIXMESH_TARGET": grpc_target, "PIXMESH_API_KEY": tenant_admin[1]}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    created = cli("keys", "create", "--name", "from-cli", "--scopes", "read,write", "--ttl", "2h")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    key_id = created.stdout.split()[1]
    listing = cli("keys", "list")
    assert listing.returncode == 0 and key_id in listing.stdout and "from-cli" in listing.stdout
    assert secret not in listing.stdout
    rotated = cli("keys", "rotate", key_id, "--grace", "60s")
    assert rotated.returncode == 0, rotated.stderr
    new_secret = rotated.stdout.strip().splitlines()[-1]
    assert new_secret.startswith("pm_") and new_secret != secret
    revoked = cli("keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    usage = cli("usage")
    assert usage.returncode == 0 and "requests_per_second" in usage.stdout
    with (
        pixmesh.Client(grpc_target, secret, timeout=10) as client,
        pytest.raises(errors.Unauthenticated),
    ):
        list(client.list_jobs())


def test_over_its_rate_a_tenant_gets_429_with_retry_after_and_others_do_not(
    stack: Stack, http: httpx.Client, api_key: str
) -> None:
    tenant = f"sec-rate-{uuid.uuid4().hex[:8]}"
    stack.gateway_admin("set-limits", "--tenant", tenant, "--requests-per-second", "2")
    limited = stack.create_api_key(tenant, "read")

    def get(key: str) -> httpx.Response:
        return http.get("/v1/operations", headers=_auth(key))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(get, [limited] * 8))
        others = list(pool.map(get, [api_key] * 8))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(200) == 2 and codes.count(429) == 6, codes
    refused = next(r for r in answers if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 1
    body = refused.json()
    assert body["code"] == 8  # RESOURCE_EXHAUSTED
    details = {d["@type"].rsplit(".", 1)[1]: d for d in body["details"]}
    assert details["ErrorInfo"]["reason"] == "RATE_LIMITED"
    assert float(details["RetryInfo"]["retry_delay"].rstrip("s")) <= 1.0
    assert [r.status_code for r in others] == [200] * 8  # the other tenant is unaffected
    time.sleep(int(refused.headers["retry-after"]))
    assert get(limited).status_code == 200
    usage = http.get("/v1/usage", headers=_auth(limited)).json()
    rate = next(q for q in usage["quotas"] if q["name"] == "requests_per_second")
    assert rate["limit"] == "2"


def test_postgres_stopped_is_503_and_the_sdk_retries_until_it_is_back(
    stack: Stack, http: httpx.Client, grpc_target: str, photo_id: str
) -> None:
    key = stack.create_api_key("dev", "read,write")
    job = http.post(
        "/v1/jobs", json={"image_id": photo_id, "operations": RESIZE}, headers=_auth(key)
    )
    assert job.status_code == 200, job.text
    job_id = job.json()["job"]["job_id"]
    stack.stop_postgres()
    restarter = threading.Thread(target=stack.start_postgres)
    try:
        down = http.get(f"/v1/jobs/{job_id}", headers=_auth(key))
        assert down.status_code == 503, down.text
        info = down.json()["details"][0]
        assert info["reason"] == "DEPENDENCY_UNAVAILABLE"
        assert "asyncpg" not in down.text and "Connection" not in down.text
        assert "retry-after" in down.headers
        with pixmesh.Client(grpc_target, key, timeout=60, retries=4) as client:
            restarter.start()
            got = client.get_job(job_id)  # retried by the SDK while Postgres comes back
        assert got.job_id == job_id
    finally:
        if restarter.is_alive():
            restarter.join(60)
        stack.start_postgres()


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/v1/images", "image/jpeg", b"\xff" * (65 << 20)),
        ("/v1/jobs", "application/json", b'{"image_id": "' + b"x" * (65 << 20) + b'"}'),
    ],
    ids=["raw-upload", "json"],
)
def test_a_body_over_the_limit_is_413_with_a_json_reason(
    http: httpx.Client, api_key: str, path: str, content_type: str, body: bytes
) -> None:
    resp = http.post(path, content=body, headers={**_auth(api_key), "content-type": content_type})
    assert resp.status_code == 413, resp.text[:300]
    error = resp.json()
    assert error["code"] == 8 and error["details"][0]["reason"] == "REQUEST_TOO_LARGE"
    assert "transcoder" not in resp.text and "buffer" not in resp.text


def test_a_long_field_is_answered_by_the_service_not_a_proxy_error(
    http: httpx.Client, api_key: str
) -> None:
    """The message quoting a 1 MiB image id used to overflow the HTTP/2 trailers: 502 with
    Envoy's "upstream ... reset reason: protocol error". Now it is cut, and the answer is 404."""
    body = {"image_id": "img_" + "x" * (1 << 20), "operations": RESIZE}
    resp = http.post("/v1/jobs", json=body, headers=_auth(api_key))
    assert resp.status_code == 404, resp.text[:300]
    assert resp.json()["details"][0]["reason"] == "IMAGE_NOT_FOUND"
    assert len(resp.json()["message"]) <= 1024 and "upstream" not in resp.text


async def test_a_webhook_secret_is_sealed_in_postgres(
    rest_url: str, api_key: str, photo_id: str, database_url: str
) -> None:
    """The jobs service stores it encrypted (PIXMESH_SECRETS_KEYS, which `make up` generates);
    deliveries are still signed with it (tests/integration/test_webhooks.py)."""
    body = {
        "image_id": photo_id,
        "operations": RESIZE,
        "webhook": {"url": "http://127.0.0.1:9/hook", "secret": "whsec_never_in_plain_text"},
    }
    async with httpx.AsyncClient(base_url=rest_url, timeout=30) as client:
        resp = await client.post("/v1/jobs", json=body, headers=_auth(api_key))
    assert resp.status_code == 200, resp.text
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT secret FROM jobs.webhook_deliveries WHERE job_id=$1",
            resp.json()["job"]["job_id"],
        )
    finally:
        await conn.close()
    assert stored.startswith("fernet:") and "whsec_never" not in stored
