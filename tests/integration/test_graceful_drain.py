"""SIGTERM drains a worker: it stops taking tasks, finishes the one in flight, then exits 0."""

from __future__ import annotations

import io
import signal
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from deploy.local import Stack

pytestmark = pytest.mark.integration


def _noisy_jpeg(width: int, height: int) -> bytes:
    # Noise is slow to encode as AVIF, which keeps the task in flight long enough to signal it.
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_sigterm_finishes_the_task_in_flight(stack: Stack, rest_url: str, api_key: str) -> None:
    stack.restart_service("imaging", {"PIXMESH_DRAIN_TIMEOUT_S": "120"})
    try:
        with httpx.Client(
            base_url=rest_url, headers={"authorization": f"Bearer {api_key}"}, timeout=30
        ) as client:
            up = client.post("/v1/images", content=_noisy_jpeg(1600, 1200))
            assert up.status_code == 200, up.text
            created = client.post(
                "/v1/jobs",
                json={
                    "image_id": up.json()["image"]["image_id"],
                    "operations": [{"convert": {"format": "AVIF"}}],
                },
            )
            assert created.status_code == 200, created.text
            job_id = created.json()["job"]["job_id"]

            deadline = time.monotonic() + 30
            while client.get(f"/v1/jobs/{job_id}").json()["job"]["stages"][0]["state"] != "RUNNING":
                assert time.monotonic() < deadline, "imaging never started the task"
                time.sleep(0.05)

            status = stack.kill_service("imaging", signal.SIGTERM, timeout=120)
            assert status == 0, f"imaging exited with {status}; see {stack.log_path('imaging')}"

            # The worker acked before exiting: the job finished on its first delivery, with
            # no imaging process running any more.
            job = client.get(f"/v1/jobs/{job_id}").json()["job"]
            deadline = time.monotonic() + 10
            while job["state"] != "SUCCEEDED" and time.monotonic() < deadline:
                time.sleep(0.1)
                job = client.get(f"/v1/jobs/{job_id}").json()["job"]
            assert job["state"] == "SUCCEEDED", job
            assert job["stages"][0]["attempts"] == 1
            assert job["outputs"][0]["format"] == "AVIF"
    finally:
        stack.start_service("imaging")
