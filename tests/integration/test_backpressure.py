"""Backpressure end to end: the real gateway, restarted with PIXMESH_MAX_QUEUE_DEPTH=1, refuses
a job whose task queue is full with HTTP 429 (RESOURCE_EXHAUSTED, QUEUE_FULL, RetryInfo) and the
SDK sees the same with retry_delay; a job whose queues are not full is still admitted.

The queue is made deep without feeding workers anything: the `metadata-tasks` consumer is paused
(JetStream consumer pause), so the one real metadata task queued here waits; it is resumed, and
that job finishes, before the test ends. The gateway is restarted with its usual settings after.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

import pixmesh
from deploy.local import Stack
from pixmesh import errors
from services.runtime.bus import TASKS_STREAM, Bus, task_durable
from tests.integration.rest import Json, Rest, reason

pytestmark = pytest.mark.integration

METADATA_TASKS = task_durable("metadata")
EXTRACT = [{"extract_metadata": {}}]


def _nats(nats_url: str, what: str, *, until: datetime | None = None) -> int:
    """Pause (`until`) or resume the metadata consumer, or read its depth, on a short connection."""

    async def go() -> int:
        bus = await Bus.connect(nats_url, "pixmesh-test-backpressure")
        try:
            if what == "pause":
                assert until is not None
                stamp = until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await bus.js.pause_consumer(TASKS_STREAM, METADATA_TASKS, stamp)
            elif what == "resume":
                await bus.js.resume_consumer(TASKS_STREAM, METADATA_TASKS)
            return await bus.consumer_depth(METADATA_TASKS)
        finally:
            await bus.close()

    return asyncio.run(go())


@pytest.fixture
def small_queues(stack: Stack, nats_url: str) -> Iterator[None]:
    stack.restart_service("gateway", {"PIXMESH_MAX_QUEUE_DEPTH": "1"})
    try:
        _nats(nats_url, "pause", until=datetime.now(UTC) + timedelta(minutes=2))
        try:
            yield
        finally:
            _nats(nats_url, "resume")
    finally:
        stack.restart_service("gateway")


def _wait(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen after {timeout}s")
        time.sleep(0.1)


def test_a_full_queue_answers_429_with_retry_info_and_other_jobs_still_run(
    rest: Rest,
    photo_id: str,
    grpc_target: str,
    api_key: str,
    nats_url: str,
    small_queues: None,
) -> None:
    first: Json = rest.create_job(photo_id, EXTRACT)  # the queue is empty: admitted
    _wait("the paused metadata task", lambda: _nats(nats_url, "depth") >= 1)

    # The gateway reads depths at most once a second: a refusal comes within ~1 s.
    refused = None
    deadline = time.monotonic() + 5.0
    while refused is None and time.monotonic() < deadline:
        resp = rest.create_job_response(photo_id, EXTRACT, idempotency_key=uuid.uuid4().hex)
        if resp.status_code == 429:
            refused = resp
        else:
            assert resp.status_code == 200, resp.text
            time.sleep(0.3)
    assert refused is not None, "no 429 while the metadata queue is over its limit"
    assert reason(refused) == "QUEUE_FULL"
    body = refused.json()
    assert body["code"] == 8 and "metadata" in body["message"]
    delays = [
        d["retry_delay"] for d in body["details"] if d["@type"].endswith("google.rpc.RetryInfo")
    ]
    assert delays == ["5s"]

    # The SDK: ResourceExhausted with the server's retry delay (no retries, to see it at once).
    with pixmesh.Client(grpc_target, api_key, timeout=10, retries=0) as client:
        with pytest.raises(errors.ResourceExhausted) as info:
            client.create_job(photo_id, ["extract_metadata"])
        assert info.value.reason == "QUEUE_FULL" and info.value.retry_delay == 5.0

    # Only the queues a job needs are checked: an imaging-only job is admitted and runs.
    other = rest.create_job(photo_id, [{"grayscale": {}}])
    assert rest.wait_job(other["job_id"])["state"] == "SUCCEEDED"

    # Resumed, the queued task runs and the queue drains (the fixture resumes it too).
    _nats(nats_url, "resume")
    assert rest.wait_job(first["job_id"])["state"] == "SUCCEEDED"
    _wait("the metadata queue drained", lambda: _nats(nats_url, "depth") == 0, timeout=30.0)
