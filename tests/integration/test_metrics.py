"""Prometheus metrics end to end: a few jobs through the real mesh (imaging, denoise, metadata, a
corrupt input, an idempotent replay, a webhook), then every service's /metrics is scraped and
parsed: every family of the team's list is exported, and the values that those jobs must have
moved did move, on the service that owns them."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from deploy.local import SERVICES, Stack
from tests.integration import images
from tests.integration.rest import Json, Rest
from tests.services.runtime.test_metrics import FAMILIES

pytestmark = pytest.mark.integration

# (family sample name, labels) -> value, of one scrape.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

RESIZE_WEBP: list[Json] = [{"resize": {"width": 64}}, {"convert": {"format": "WEBP"}}]


class Scrape:
    """One service's /metrics, parsed with prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.families: set[str] = set()
        self.samples: Samples = {}
        for family in text_string_to_metric_families(text):
            # The parser names a counter's family without its _total suffix.
            self.families.add(family.name + ("_total" if family.type == "counter" else ""))
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def sum(self, name: str, **labels: str) -> float:
        """The sum over the samples of `name` whose labels include `labels`."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)

    def labels(self, name: str, label: str) -> set[str]:
        return {dict(ls)[label] for (n, ls), _ in self.samples.items() if n == name}


def scrape(stack: Stack, service: str) -> Scrape:
    resp = httpx.get(stack.metrics_url(service), timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape(resp.text)


def scrape_all(stack: Stack) -> dict[str, Scrape]:
    return {name: scrape(stack, name) for name in SERVICES}


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback webhook receiver answering 200."""
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("content-length", "0"))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", received
    finally:
        server.shutdown()
        server.server_close()


def noisy_png(side: int = 96) -> bytes:
    rng = np.random.default_rng(7)
    ramp = np.linspace(40, 200, side)[None, :, None] * np.ones((side, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def run(rest: Rest, image_id: str, ops: list[Json], state: str = "SUCCEEDED", **body: Any) -> Json:
    resp = rest.http.post("/v1/jobs", json={"image_id": image_id, "operations": ops, **body})
    assert resp.status_code == 200, resp.text
    job = rest.wait_job(resp.json()["job"]["job_id"], timeout=120)
    assert job["state"] == state, job
    return job


def test_every_service_exports_the_families_and_jobs_move_them(
    stack: Stack, rest: Rest, photo: bytes, receiver: tuple[str, list[bytes]]
) -> None:
    before = scrape_all(stack)
    url, received = receiver

    photo_id = rest.upload(photo)["image_id"]
    body = {"idempotency_key": uuid.uuid4().hex, "webhook": {"url": url}}
    first = run(rest, photo_id, RESIZE_WEBP, **body)
    # The same request again: answered with the same job from the idempotency key.
    replay = rest.http.post(
        "/v1/jobs", json={"image_id": photo_id, "operations": RESIZE_WEBP, **body}
    )
    assert replay.status_code == 200, replay.text
    assert replay.json()["job"]["job_id"] == first["job_id"]
    run(rest, photo_id, [{"extract_metadata": {}}])
    noisy_id = rest.upload(noisy_png(), "image/png")["image_id"]
    run(rest, noisy_id, [{"denoise": {"auto": True}}])
    broken_id = rest.upload(images.truncated_in_scan(photo))["image_id"]
    failed = run(rest, broken_id, RESIZE_WEBP, state="FAILED")
    reason = failed["error"]["reason"]
    wait_for(lambda: len(received) >= 1)

    def grew(service: str, name: str, **labels: str) -> Callable[[], bool]:
        old = before[service].sum(name, **labels)
        return lambda: scrape(stack, service).sum(name, **labels) > old

    # Recorded after the job is seen finished: the webhook's attempt, and the indexing of the
    # uploads (the gateway's ImageUploaded event, consumed by metadata on its own).
    wait_for(grew("jobs", "pixmesh_webhook_attempts_total", outcome="delivered"))
    wait_for(grew("metadata", "pixmesh_metadata_indexing_lag_seconds_count"))
    now = scrape_all(stack)

    def moved(service: str, name: str, by: float = 1, **labels: str) -> None:
        old, new = before[service].sum(name, **labels), now[service].sum(name, **labels)
        assert new - old >= by, (service, name, labels, old, new)

    # Every family of the list, from every service (one module defines them all), and
    # prometheus-client's process metrics; every service says who it is.
    for name, scraped in now.items():
        missing = set(FAMILIES) - scraped.families
        assert not missing, (name, sorted(missing))
        assert scraped.sum("process_cpu_seconds_total") > 0
        assert scraped.sum("process_resident_memory_bytes") > 0
        assert scraped.sum("pixmesh_service_info", service=name) == 1, name
        assert scraped.labels("pixmesh_grpc_server_handled_total", "service") <= {name}

    # gRPC RED on both ends of gateway -> jobs.
    gateway, jobs = "pixmesh.gateway.v1.GatewayService", "pixmesh.jobs.v1.JobsService"
    ok = {"grpc_method": "CreateJob", "grpc_code": "OK"}
    moved("gateway", "pixmesh_grpc_server_handled_total", 5, grpc_service=gateway, **ok)
    moved("gateway", "pixmesh_grpc_server_handling_seconds_count", 5, grpc_method="CreateJob")
    # The replay never reached jobs' CreateJob (the gateway read the job with GetJob).
    moved("gateway", "pixmesh_grpc_client_handled_total", 4, grpc_service=jobs, **ok)
    moved("jobs", "pixmesh_grpc_server_handled_total", 4, grpc_service=jobs, **ok)
    moved(
        "jobs",
        "pixmesh_grpc_server_handled_total",
        1,
        grpc_service=jobs,
        grpc_method="GetJob",
        grpc_code="OK",
    )
    moved("gateway", "pixmesh_gateway_idempotency_hits_total")

    # Jobs: created once each (the replay is not a job), finished by state, events applied.
    moved("jobs", "pixmesh_jobs_created_total", 4)
    moved("jobs", "pixmesh_jobs_finished_total", 3, state="SUCCEEDED")
    moved("jobs", "pixmesh_jobs_finished_total", 1, state="FAILED")
    moved("jobs", "pixmesh_job_duration_seconds_count", 3, state="SUCCEEDED")
    # One completed/failed per task. A started event (a task slower than PIXMESH_STARTED_DELAY_S,
    # the failed one) is not counted when it arrives after its task's end: the jobs consumer
    # applies events concurrently, and a late one is a no-op (JobsService.apply_event).
    moved("jobs", "pixmesh_jobs_events_applied_total", 4)
    moved("jobs", "pixmesh_webhook_attempts_total", 1, outcome="delivered")
    assert ("pixmesh_jobs_running", frozenset({("service", "jobs")})) in now["jobs"].samples

    # Tasks on each worker, by outcome, with queue wait and duration by operation.
    moved("imaging", "pixmesh_tasks_received_total", 2)
    moved("imaging", "pixmesh_tasks_succeeded_total", 1)
    moved("imaging", "pixmesh_tasks_failed_total", 1, reason=reason)
    moved("imaging", "pixmesh_tasks_dead_lettered_total", 1, reason=reason)
    moved("imaging", "pixmesh_task_duration_seconds_count", 2, operation="resize")
    moved("imaging", "pixmesh_task_queue_wait_seconds_count", 2)
    moved("inference", "pixmesh_tasks_succeeded_total", 1)
    moved("inference", "pixmesh_task_duration_seconds_count", 1, operation="denoise")
    moved("metadata", "pixmesh_tasks_succeeded_total", 1)
    moved("metadata", "pixmesh_task_duration_seconds_count", 1, operation="extract_metadata")

    # Service metrics.
    moved("imaging", "pixmesh_imaging_step_seconds_count", 1, step="decode", format="jpg")
    moved("imaging", "pixmesh_imaging_step_seconds_count", 1, step="ops", format="jpg")
    moved("imaging", "pixmesh_imaging_step_seconds_count", 1, step="encode", format="webp")
    moved("inference", "pixmesh_inference_batch_size_count", 1)
    moved("inference", "pixmesh_inference_queue_delay_seconds_count", 1)
    moved("inference", "pixmesh_inference_tiles_total", 1)
    providers = now["inference"].labels("pixmesh_inference_provider_info", "provider")
    assert len(providers) == 1 and providers <= now["inference"].labels(
        "pixmesh_inference_tiles_total", "provider"
    ), providers
    moved("metadata", "pixmesh_metadata_indexing_lag_seconds_count", 1)

    # Queue gauges: each worker its own durable, jobs all of them and every stream.
    for worker in ("imaging", "inference", "metadata"):
        consumers = now[worker].labels("pixmesh_consumer_pending", "consumer")
        assert f"{worker}-tasks" in consumers, (worker, consumers)
    assert now["metadata"].labels("pixmesh_consumer_pending", "consumer") == {
        "metadata-tasks",
        "metadata-uploads",
    }
    # jobs may have started before the workers made their consumers: the next refresh (every
    # 5 s) finds them.
    fleet = {"imaging-tasks", "inference-tasks", "metadata-tasks"}
    fleet |= {"jobs-task-events", "metadata-uploads"}
    wait_for(
        lambda: scrape(stack, "jobs").labels("pixmesh_consumer_waiting", "consumer") == fleet,
        timeout=15,
    )
    assert now["jobs"].labels("pixmesh_stream_messages", "stream") == {
        "PIXMESH_TASKS",
        "PIXMESH_EVENTS",
        "PIXMESH_DLQ",
    }

    # The corrupt input's dead letter is in the DLQ, and the events stream is not empty (once
    # the gauges are refreshed, every 5 s).
    def streams_counted() -> bool:
        jobs = scrape(stack, "jobs")
        dlq = jobs.sum("pixmesh_stream_messages", stream="PIXMESH_DLQ")
        return dlq >= 1 and jobs.sum("pixmesh_stream_messages", stream="PIXMESH_EVENTS") > 0

    wait_for(streams_counted, timeout=15)
