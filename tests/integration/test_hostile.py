"""Hostile input end to end: the generated corpus through REST, then a worker that crashes.

Every hostile file gets a 400 with its reason at upload, or a job that FAILS on its first
delivery with its reason, in bounded time; the imaging process is the same healthy process
afterwards. A child process that dies mid-task (as a decoder crash would kill it) costs only its
task: it is retried, and after max_deliver deliveries it ends FAILED with WORKER_CRASHED, while
the worker itself stays up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psutil
import pytest

from deploy.local import Stack
from tests.integration import images
from tests.integration.rest import Json, Rest, reason
from tests.services.imaging import hostile

pytestmark = pytest.mark.integration

OPERATIONS = [{"resize": {"width": 100}}, {"convert": {"format": "WEBP"}}]


def test_hostile_corpus(rest: Rest, stack: Stack, photo_id: str) -> None:
    imaging_pid = stack.pids()["imaging"]
    mismatches: list[str] = []
    jobs: list[tuple[hostile.Case, str]] = []
    for case in hostile.CASES:
        resp = rest.upload_response(case.data, case.content_type)
        if case.stage == hostile.UPLOAD:
            got = f"{resp.status_code} {reason(resp) if resp.status_code == 400 else resp.text}"
            if got != f"400 {case.reason}":
                mismatches.append(f"{case.name}: upload gave {got}, expected 400 {case.reason}")
            continue
        if resp.status_code != 200:
            mismatches.append(f"{case.name}: upload gave {resp.status_code} {resp.text}")
            continue
        job = rest.create_job(resp.json()["image"]["image_id"], OPERATIONS, uuid.uuid4().hex)
        jobs.append((case, job["job_id"]))

    started = time.monotonic()
    for case, job_id in jobs:
        job = rest.wait_job(job_id, timeout=max(5.0, 20 - (time.monotonic() - started)))
        (stage,) = job["stages"]
        got = (job["state"], job.get("error", {}).get("reason"), stage["attempts"])
        if got != ("FAILED", case.reason, 1):  # permanent: never retried
            mismatches.append(f"{case.name}: job ended {got}, expected FAILED {case.reason} 1")
        elif not job["error"].get("message"):
            mismatches.append(f"{case.name}: no message in {job['error']}")

    assert not mismatches, "\n".join(mismatches)
    # The same process served it all, and still does.
    assert stack.pids()["imaging"] == imaging_pid
    assert_serving(rest, photo_id)


def test_a_mislabelled_image_is_read_as_what_it_is(rest: Rest) -> None:
    # The label is never trusted: a real PNG sent as a JPEG is a PNG (and hostile bytes sent
    # with an image label are refused by what they are, above).
    image = rest.upload(hostile.photo("PNG"), "image/jpeg")
    assert (image["format"], image["width"], image["height"]) == ("PNG", 320, 240)


@pytest.fixture
def crash_test_imaging(stack: Stack) -> Iterator[Stack]:
    """Imaging that gives up after 2 deliveries (5 by default would take a minute of backoff);
    the shared stack gets its ordinary imaging back afterwards."""
    stack.restart_service("imaging", {"PIXMESH_MAX_DELIVER": "2"})
    yield stack
    stack.restart_service("imaging")


def test_a_task_that_keeps_killing_its_process_fails_alone(
    rest: Rest, crash_test_imaging: Stack, photo_id: str
) -> None:
    stack = crash_test_imaging
    imaging_pid = stack.pids()["imaging"]
    # Seconds of AVIF encoding: long enough to be killed mid-task, every time.
    image = rest.upload(images.noisy_jpeg(3000, 2000))
    job = rest.create_job(image["image_id"], [{"convert": {"format": "AVIF"}}], uuid.uuid4().hex)

    for attempt in (1, 2):
        wait_attempt_running(rest, job["job_id"], attempt)
        kill_busy_child(imaging_pid)

    done = rest.wait_job(job["job_id"], timeout=20)
    assert done["state"] == "FAILED", done
    assert done["error"]["reason"] == "WORKER_CRASHED"
    assert done["error"]["message"]
    assert done["stages"][0]["attempts"] == 2
    # The worker itself never went down, and serves the next job.
    assert stack.pids()["imaging"] == imaging_pid
    assert_serving(rest, photo_id)


def assert_serving(rest: Rest, photo_id: str) -> None:
    job = rest.create_job(photo_id, OPERATIONS, uuid.uuid4().hex)
    done = rest.wait_job(job["job_id"], timeout=20)
    assert done["state"] == "SUCCEEDED", done
    assert done["stages"][0]["attempts"] == 1


def wait_attempt_running(rest: Rest, job_id: str, attempt: int, timeout: float = 20) -> Json:
    deadline = time.monotonic() + timeout
    while True:
        job = rest.get_job(job_id)
        stage = job["stages"][0]
        if stage["state"] == "RUNNING" and stage["attempts"] == attempt:
            return job
        assert job["state"] in ("PENDING", "RUNNING"), job
        assert time.monotonic() < deadline, f"attempt {attempt} never RUNNING: {job}"
        time.sleep(0.05)


def kill_busy_child(imaging_pid: int, timeout: float = 10) -> None:
    """SIGKILL the pipeline child that is burning CPU (the parent and the forkserver are spared).

    Children are forked by the forkserver, itself a child of the service process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [
            p
            for server in psutil.Process(imaging_pid).children()
            if "forkserver" in " ".join(server.cmdline())
            for p in server.children()
        ]
        before = {p.pid: cpu_seconds(p) for p in workers}
        time.sleep(0.3)
        # The busiest child: on a loaded machine the encoder may get a small share of a core
        # in 0.3 s, while idle children use none at all.
        used = {p: cpu_seconds(p) - before[p.pid] for p in workers}
        busiest = max(used, key=lambda p: used[p], default=None)
        if busiest is not None and used[busiest] > 0.02:
            busiest.kill()
            busiest.wait(5)
            return
    raise AssertionError("no busy pipeline child to kill")


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:  # recycled meanwhile
        return 0.0
    return float(times.user + times.system)
