"""Idempotency keys with Stripe's semantics: same key + same request -> the same job, even after
it finished; same key + different request -> FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED."""

from __future__ import annotations

import uuid

import pytest

import pixmesh
from pixmesh import errors, ops
from tests.integration.rest import Json, Rest, reason

pytestmark = pytest.mark.integration

SMALL_PNG: list[Json] = [{"resize": {"width": 64, "height": 48}}, {"convert": {"format": "PNG"}}]


def jobs_with_key(rest: Rest, key: str) -> list[str]:
    return [j["job_id"] for j in rest.list_all() if j.get("idempotency_key") == key]


def test_rest_same_key_same_request(rest: Rest, photo_id: str) -> None:
    key = uuid.uuid4().hex
    first = rest.create_job(photo_id, SMALL_PNG, key)
    second = rest.create_job(photo_id, SMALL_PNG, key)
    assert second["job_id"] == first["job_id"]
    assert second["idempotency_key"] == key

    finished = rest.wait_job(first["job_id"])
    assert finished["state"] == "SUCCEEDED", finished
    # After the job finished, the key still returns it (with its current state).
    again = rest.create_job(photo_id, SMALL_PNG, key)
    assert again["job_id"] == first["job_id"]
    assert again["state"] == "SUCCEEDED"
    assert jobs_with_key(rest, key) == [first["job_id"]]


def test_rest_same_key_different_request(rest: Rest, photo_id: str) -> None:
    key = uuid.uuid4().hex
    first = rest.create_job(photo_id, SMALL_PNG, key)
    other_ops: list[Json] = [
        {"resize": {"width": 65, "height": 48}},
        {"convert": {"format": "PNG"}},
    ]

    resp = rest.create_job_response(photo_id, other_ops, key)

    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 9  # FAILED_PRECONDITION
    assert reason(resp) == "IDEMPOTENCY_KEY_REUSED"
    assert jobs_with_key(rest, key) == [first["job_id"]]


def test_sdk_idempotency(grpc_target: str, api_key: str, photo_id: str) -> None:
    key = uuid.uuid4().hex
    pipeline = [ops.resize(64, 48), ops.convert("png")]
    with pixmesh.Client(grpc_target, api_key, timeout=30) as client:
        first = client.create_job(photo_id, pipeline, idempotency_key=key)
        second = client.create_job(photo_id, ["resize=64x48", "convert=png"], idempotency_key=key)
        assert second.job_id == first.job_id

        with pytest.raises(errors.FailedPrecondition) as caught:
            client.create_job(photo_id, [ops.resize(64, 48), ops.convert("webp")], key)
        assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"

        # Without a key the SDK makes a fresh one per call: two calls, two jobs.
        a = client.create_job(photo_id, pipeline)
        b = client.create_job(photo_id, pipeline)
        assert a.job_id != b.job_id
        assert a.idempotency_key and a.idempotency_key != b.idempotency_key


def test_keys_are_per_tenant(rest: Rest, other_tenant: Rest, photo: bytes, photo_id: str) -> None:
    key = uuid.uuid4().hex
    mine = rest.create_job(photo_id, SMALL_PNG, key)
    their_image = other_tenant.upload(photo)["image_id"]
    theirs = other_tenant.create_job(their_image, SMALL_PNG, key)
    assert theirs["job_id"] != mine["job_id"]
