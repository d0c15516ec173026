"""Dead letters: a task that fails for good lands in PIXMESH_DLQ, is listed by the admin CLI,
and a replay runs the job again from the failed stage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.integration


def _jpeg_truncated_in_scan() -> bytes:
    """Intact header (the upload is accepted, the plan is valid), no way to decode the pixels."""
    buf = io.BytesIO()
    Image.effect_noise((640, 480), 64).convert("RGB").save(buf, "JPEG")
    data = buf.getvalue()
    return data[: data.index(b"\xff\xda") + 200]


def _wait(client: httpx.Client, job_id: str, states: set[str], timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()["job"]
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def _admin(stack, *args: str) -> str:  # type: ignore[no-untyped-def]
    env = {**os.environ, **stack.service_env("jobs")}
    out = subprocess.run(
        [sys.executable, "-m", "services.jobs.admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_failed_task_is_dead_lettered_listed_and_replayable(stack, rest_url, api_key) -> None:  # type: ignore[no-untyped-def]
    headers = {"authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=rest_url, headers=headers, timeout=30) as client:
        up = client.post(
            "/v1/images", content=_jpeg_truncated_in_scan(), headers={"content-type": "image/jpeg"}
        )
        assert up.status_code == 200, up.text
        image_id = up.json()["image"]["image_id"]
        created = client.post(
            "/v1/jobs",
            json={"image_id": image_id, "operations": [{"resize": {"width": 100}}]},
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["job"]["job_id"]

        job = _wait(client, job_id, {"FAILED", "SUCCEEDED"})
        assert job["state"] == "FAILED"
        assert job["error"]["reason"] == "IMAGE_CORRUPT"
        assert job["stages"][0]["state"] == "FAILED"

        letters = [json.loads(line) for line in _admin(stack, "dlq", "list").splitlines()]
        mine = [e for e in letters if e.get("task", {}).get("job_id") == job_id]
        assert mine, letters
        assert mine[0]["error"]["reason"] == "IMAGE_CORRUPT"
        assert mine[0]["subject"] == "pixmesh.dlq.imaging"

        replayed = json.loads(_admin(stack, "dlq", "replay", job_id))
        assert replayed["state"] == "RUNNING"
        # The input is still corrupt, so the replay fails again, through the same path.
        again = _wait(client, job_id, {"FAILED", "SUCCEEDED"})
        assert again["state"] == "FAILED"
        assert again["error"]["reason"] == "IMAGE_CORRUPT"
        letters = [json.loads(line) for line in _admin(stack, "dlq", "list").splitlines()]
        assert len([e for e in letters if e.get("task", {}).get("job_id") == job_id]) == 2
