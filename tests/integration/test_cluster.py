"""Chaos on the cluster mode (`make up-cluster`): nothing is lost when a NATS node or a replica
of any service dies.

Four clients submit 300 jobs of mixed pipelines (imaging resize/convert, renditions, imaging +
metadata, a few DnCNN denoises on small images) through Envoy, each with its own idempotency key,
while a chaos thread SIGKILLs the NATS node that leads the task stream, then one replica of every
service, one at a time, and starts each again. A client retries UNAVAILABLE and deadline errors
with the same key (what a key is for); losing or duplicating a job is a failure.

Pass: every job SUCCEEDED; the tenant has exactly one job per key, and sending every key again
returns the same job; every output downloads with its sha256; every replica did work, read from
its /metrics (a killed replica's counters are read just before the kill and added to those of its
second life).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

import pixmesh
from deploy.local import Stack
from pixmesh import errors, ops
from pixmesh.common.v1.job_pb2 import Job
from pixmesh.common.v1.operations_pb2 import Operation
from tests.integration import images

pytestmark = pytest.mark.integration

JOBS = 300
CLIENTS = 4
SUBMIT_INTERVAL_S = 0.15  # 300 jobs over ~45 s: every kill happens while work flows ...
TAIL = 20  # ... and these last jobs wait for the chaos to end, however slow the machine is
FINISH_TIMEOUT_S = 120.0  # after the last submission, for every job to end
RETRY_FOR_S = 45.0  # how long a client keeps retrying one call
RETRYABLE = (errors.Unavailable, errors.DeadlineExceeded)
TERMINAL = {Job.SUCCEEDED, Job.FAILED, Job.CANCELLED}
GATEWAY_SERVICE = "pixmesh.gateway.v1.GatewayService"
# One replica of every service, killed in this order (the other imaging replica, the other
# gateway, ... keep serving meanwhile; inference has one, so its tasks wait for it).
VICTIMS = ("imaging-1", "inference", "gateway-1", "metadata-2", "jobs-2")

T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    key: str
    kind: str  # imaging | renditions | metadata | denoise
    image_id: str
    operations: Sequence[Operation]
    renditions: Mapping[str, Sequence[Operation]] | None = None


@dataclass
class Log:
    """What the clients and the chaos thread saw, for the failure messages."""

    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, text: str) -> None:
        with self.lock:
            self.events.append(f"{time.monotonic() - self.started:6.1f}s {text}")

    def retried(self, exc: Exception) -> None:
        with self.lock:
            self.retries[type(exc).__name__] += 1


def with_retries(call: Callable[[], T], log: Log) -> T:
    """The client-side retry every caller of a distributed service writes: same request (and so
    the same idempotency key), backoff, bounded."""
    deadline = time.monotonic() + RETRY_FOR_S
    delay = 0.2
    while True:
        try:
            return call()
        except RETRYABLE as exc:
            if time.monotonic() > deadline:
                raise
            log.retried(exc)
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def job_specs(run: str, photos: Sequence[str], noisy: str) -> list[Spec]:
    specs = []
    for i in range(JOBS):
        image = photos[i % len(photos)]
        width = 40 + (i * 7) % 180  # distinct sizes: outputs are computed, not reused
        key = f"{run}-{i}"
        if i % 30 == 29:
            spec = Spec(key, "denoise", noisy, [ops.denoise(auto=True), ops.convert("png")])
        elif i % 10 in (3, 4):
            renditions = {
                "thumb": [ops.resize(width // 2 + 8), ops.convert("webp")],
                "card": [ops.resize(width + 60), ops.convert("jpeg")],
            }
            spec = Spec(key, "renditions", image, [], renditions)
        elif i % 10 in (5, 6):
            pipeline = [ops.resize(width), ops.convert("png"), ops.extract_metadata()]
            spec = Spec(key, "metadata", image, pipeline)
        else:
            fmt = ("webp", "jpeg", "png")[i % 3]
            spec = Spec(key, "imaging", image, [ops.resize(width), ops.convert(fmt)])
        specs.append(spec)
    return specs


def create(client: pixmesh.Client, spec: Spec, log: Log) -> Job:
    return with_retries(
        lambda: client.create_job(
            spec.image_id, spec.operations, spec.key, renditions=spec.renditions, timeout=10
        ),
        log,
    )


def read_metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def work_done(url: str, service: str) -> float:
    """The counter that says a replica did its share: handled public RPCs (gateway), applied
    task events (jobs), acked tasks (workers)."""
    samples = read_metrics(url)
    if service == "gateway":
        handled = samples.get("pixmesh_grpc_server_handled_total", [])
        return sum(v for labels, v in handled if labels.get("grpc_service") == GATEWAY_SERVICE)
    name = (
        "pixmesh_jobs_events_applied_total"
        if service == "jobs"
        else "pixmesh_tasks_succeeded_total"
    )
    return sum(v for _, v in samples.get(name, []))


def task_stream_leader(cluster: Stack) -> int:
    """The NATS node leading PIXMESH_TASKS's Raft group: the one whose loss hurts most."""
    url = f"{cluster.nats_monitor_url(1)}/jsz?streams=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        accounts = json.load(response).get("account_details") or []
    for account in accounts:
        for stream in account.get("stream_detail") or []:
            if stream["name"] == "PIXMESH_TASKS":
                leader: str = stream["cluster"]["leader"]
                return int(leader.rsplit("-", 1)[1])  # server names are pixmesh-<node>
    raise AssertionError(f"no PIXMESH_TASKS in {url}")


def chaos(
    cluster: Stack, log: Log, before_kill: dict[str, float], submitted: Callable[[], int]
) -> None:
    """Kill and restart, one at a time, while the clients submit."""
    time.sleep(3)  # some jobs are in flight
    node = task_stream_leader(cluster)
    log.event(f"SIGKILL nats-{node} (PIXMESH_TASKS leader), {submitted()} jobs submitted")
    cluster.kill_nats(node)
    time.sleep(2)
    cluster.start_nats(node)
    log.event(f"nats-{node} back, meta group current")
    for victim in VICTIMS:
        time.sleep(0.5)
        service = cluster.replicas(victim)[0].service
        before_kill[victim] = work_done(cluster.metrics_url(victim), service)
        log.event(
            f"SIGKILL {victim} (its work so far {before_kill[victim]:.0f}), "
            f"{submitted()} jobs submitted"
        )
        cluster.kill_service(victim)
        time.sleep(1)
        cluster.start_service(victim)
        log.event(f"{victim} SERVING again")


def test_no_job_is_lost_or_duplicated_while_nodes_and_replicas_die(cluster: Stack) -> None:
    log = Log()
    key = cluster.create_api_key("chaos")
    clients = [pixmesh.Client(cluster.grpc_target, key, timeout=10) for _ in range(CLIENTS)]
    try:
        run = uuid.uuid4().hex[:8]
        uploader = clients[0]
        sizes = [(256, 192), (320, 240), (400, 300), (480, 360), (640, 480)]
        photos = [
            uploader.upload(images.camera_jpeg(w, h, description=f"{run}-{w}")).image_id
            for w, h in sizes
        ]
        noisy = uploader.upload(images.noisy_jpeg(96, 96)).image_id
        specs = job_specs(run, photos, noisy)

        created: dict[str, str] = {}  # idempotency key -> job id
        created_lock = threading.Lock()
        before_kill: dict[str, float] = {}
        calm = threading.Event()  # the chaos is over

        def submit(k: int) -> None:
            client = clients[k]
            t0 = time.monotonic()
            for i in range(k, JOBS, CLIENTS):
                time.sleep(max(0.0, t0 + i * SUBMIT_INTERVAL_S - time.monotonic()))
                if i >= JOBS - TAIL:
                    calm.wait(timeout=150)
                job = create(client, specs[i], log)
                with created_lock:
                    created[specs[i].key] = job.job_id

        with concurrent.futures.ThreadPoolExecutor(CLIENTS + 1) as pool:
            submitters = [pool.submit(submit, k) for k in range(CLIENTS)]

            def chaos_then_calm() -> None:
                try:
                    chaos(cluster, log, before_kill, lambda: len(created))
                finally:
                    calm.set()

            chaos_done = pool.submit(chaos_then_calm)
            for future in [chaos_done, *submitters]:
                future.result(timeout=180)  # raises what the thread raised
        log.event(f"{len(created)} jobs created; retries {dict(log.retries)}")

        # Every job ends.
        jobs: dict[str, Job] = {}
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while time.monotonic() < deadline:
            jobs = with_retries(
                lambda: {j.job_id: j for j in uploader.list_jobs(page_size=100)}, log
            )
            if all(jobs.get(job_id, Job()).state in TERMINAL for job_id in created.values()):
                break
            time.sleep(2)
        log.event("jobs ended" if time.monotonic() < deadline else "timed out waiting")
        states = Counter(Job.State.Name(j.state) for j in jobs.values())
        story = "\n".join(log.events)
        stuck = [j for j in jobs.values() if j.state not in TERMINAL][:3]
        assert all(j.state == Job.SUCCEEDED for j in jobs.values()), (
            f"{states}\n{story}\nfirst unfinished: {stuck}\n"
            f"failed: {[j for j in jobs.values() if j.state == Job.FAILED][:3]}"
        )
        # No lost update: every stage ended with the delivery that made it, started then
        # finished (a late TaskStarted applied over a finished stage used to leave attempts 0).
        unattempted = [
            (j.job_id, s.index, s.attempts)
            for j in jobs.values()
            for s in j.stages
            if s.attempts < 1 or s.started_at.ToNanoseconds() > s.finished_at.ToNanoseconds()
        ]
        assert not unattempted, unattempted[:5]

        # Exactly one job per key: the tenant has no other job, and every key gives it again.
        assert len(created) == JOBS
        assert sorted(jobs) == sorted(created.values()), f"{len(jobs)} jobs for {JOBS} keys"

        def resend(k: int) -> list[tuple[str, str]]:
            return [(s.key, create(clients[k], s, log).job_id) for s in specs[k::CLIENTS]]

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            again = dict(pair for part in pool.map(resend, range(CLIENTS)) for pair in part)
        assert again == created

        # Every output downloads, byte for byte what the job says.
        def check_outputs(k: int) -> int:
            count = 0
            for spec in specs[k::CLIENTS]:
                job = jobs[created[spec.key]]
                expected = 2 if spec.renditions else 1
                assert len(job.outputs) == expected, job
                for output in job.outputs:
                    data = with_retries(
                        functools.partial(clients[k].download_output, job.job_id, output.index), log
                    )
                    assert hashlib.sha256(data).hexdigest() == output.sha256, (spec, output)
                    assert len(data) == output.size_bytes
                    count += 1
                if spec.kind == "metadata":
                    assert job.metadata.width > 0, job
            return count

        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            downloaded = sum(pool.map(check_outputs, range(CLIENTS)))
        assert downloaded == sum(2 if s.renditions else 1 for s in specs)
    finally:
        for client in clients:
            client.close()

    # Every replica did work (a killed one: before its kill plus since its restart).
    work = {}
    for service in ("gateway", "jobs", "imaging", "inference", "metadata"):
        for replica in cluster.replicas(service):
            now = work_done(cluster.metrics_url(replica.name), service)
            work[replica.name] = before_kill.get(replica.name, 0.0) + now
    assert set(before_kill) == set(VICTIMS)
    idle = [name for name, done in work.items() if done <= 0]
    assert not idle, f"replicas that did nothing: {idle}; work {work}\n" + "\n".join(log.events)
    print("\n".join(log.events), f"\nwork per replica: {work}", sep="\n")
