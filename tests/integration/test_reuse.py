"""Reuse and provenance end to end (REST through Envoy, the real stack): an identical job finds
its outputs and skips the work, `"reuse": false` computes them again, and every output says how
it was made."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from tests.integration.images import camera_jpeg
from tests.integration.rest import Json, Rest

pytestmark = pytest.mark.integration

OPERATIONS: list[Json] = [{"resize": {"width": 160}}, {"convert": {"format": "WEBP"}}]


def run(rest: Rest, body: Json) -> Json:
    created = rest.http.post("/v1/jobs", json=body)
    assert created.status_code == 200, created.text
    done = rest.wait_job(created.json()["job"]["job_id"])
    assert done["state"] == "SUCCEEDED", done
    return done


def test_an_identical_job_is_reused_and_reuse_false_recomputes(rest: Rest) -> None:
    # A source of its own: nothing earlier made these outputs.
    image = rest.upload(camera_jpeg(640, 480, description=uuid.uuid4().hex))
    body: Json = {"image_id": image["image_id"], "operations": OPERATIONS}

    first = run(rest, body)
    second = run(rest, body)
    forced = run(rest, {**body, "reuse": False})

    [made], [found], [again] = first["outputs"], second["outputs"], forced["outputs"]
    for job, output in ((first, made), (second, found), (forced, again)):
        assert output["sha256"] == made["sha256"] and output["size_bytes"] == made["size_bytes"]
        assert (output["width"], output["height"], output["format"]) == (160, 120, "WEBP")
        data = rest.download(job["job_id"]).content
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
        p = output["provenance"]
        assert p["source_sha256"] == image["sha256"]
        assert p["input_key"] == f"inputs/{image['sha256']}"
        assert p["worker_service"] == "imaging" and p["worker_instance"]
        assert p["engine"]["pillow"] and p["engine"]["libwebp"] and p["key_scheme"]
        assert p["operations"][-1]["convert"]["effort"] >= 0
        assert len(p["trace_id"]) == 32
    assert made["provenance"].get("reused", False) is False
    assert found["provenance"]["reused"] is True
    assert found["provenance"]["computed_trace_id"] == made["provenance"]["trace_id"]
    assert again["provenance"].get("reused", False) is False
    assert again["provenance"]["trace_id"] != made["provenance"]["trace_id"]
