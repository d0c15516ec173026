"""Crash recovery: SIGKILL the imaging worker in the middle of a task; JetStream redelivers the
unacked task after AckWait (3 s in tests, see SERVICE_ENV in tests/conftest.py) to the restarted
worker and the job still succeeds."""

from __future__ import annotations

import io
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from deploy.local import Stack
from tests.integration import images
from tests.integration.rest import Json, Rest

pytestmark = pytest.mark.integration

# About 4 s of AVIF encoding on 2 cores: long enough to be killed mid-task.
SLOW_SOURCE = (3000, 2000)


@pytest.fixture
def imaging_restored(stack: Stack) -> Iterator[Stack]:
    """The stack is shared: imaging must be back and SERVING whatever the test did."""
    yield stack
    if not stack.is_running("imaging"):
        stack.start_service("imaging")


def wait_stage_running(rest: Rest, job_id: str, timeout: float = 20.0) -> Json:
    deadline = time.monotonic() + timeout
    while True:
        job = rest.get_job(job_id)
        if job["stages"][0]["state"] == "RUNNING":
            return job
        assert job["state"] in ("PENDING", "RUNNING"), job
        assert time.monotonic() < deadline, f"imaging stage never RUNNING: {job}"
        time.sleep(0.05)


def test_job_survives_imaging_sigkill(rest: Rest, imaging_restored: Stack) -> None:
    stack = imaging_restored
    image = rest.upload(images.noisy_jpeg(*SLOW_SOURCE))
    job = rest.create_job(image["image_id"], [{"convert": {"format": "AVIF"}}], uuid.uuid4().hex)

    running = wait_stage_running(rest, job["job_id"])
    assert running["stages"][0]["attempts"] == 1
    status = stack.kill_service("imaging", signal.SIGKILL)
    assert status == -signal.SIGKILL
    # Still mid-task when it died: otherwise this test proves nothing.
    assert rest.get_job(job["job_id"])["state"] == "RUNNING"

    stack.start_service("imaging")
    done = rest.wait_job(job["job_id"], timeout=60)

    assert done["state"] == "SUCCEEDED", done
    stage = done["stages"][0]
    assert stage["state"] == "SUCCEEDED"
    assert stage["attempts"] >= 2  # redelivered, not a lucky first run
    (output,) = done["outputs"]
    assert (output["format"], output["width"], output["height"]) == ("AVIF", *SLOW_SOURCE)
    resp = rest.download(done["job_id"], 0)
    assert resp.status_code == 200
    avif = Image.open(io.BytesIO(resp.content))
    assert avif.format == "AVIF"
    assert avif.size == SLOW_SOURCE
