"""One trace per job, from Envoy to the last worker, as received by the real OTLP sink.

The hops: Envoy -> gateway (gRPC) -> jobs (gRPC) -> outbox relay -> NATS -> imaging -> NATS event
-> jobs -> outbox relay -> NATS -> metadata. Services export with a batch span processor, so the
sink's file is polled for a while.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.observability.otlp_sink import read_spans
from tests.integration.rest import RESIZE_WEBP_METADATA, Rest

pytestmark = pytest.mark.integration

SERVICES = {
    "pixmesh-envoy",
    "pixmesh-gateway",
    "pixmesh-jobs",
    "pixmesh-imaging",
    "pixmesh-metadata",
}
CREATE_JOB = "/pixmesh.gateway.v1.GatewayService/CreateJob"
SPAN_WAIT_S = 15.0

Span = dict[str, Any]


def wait_for_spans(
    trace_file: Path, select: Callable[[list[Span]], list[Span]], done: Callable[[list[Span]], bool]
) -> list[Span]:
    """Re-read the sink's file until `done(select(spans))` or SPAN_WAIT_S passed."""
    deadline = time.monotonic() + SPAN_WAIT_S
    while True:
        spans = select(read_spans(trace_file))
        if done(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def services_of(spans: list[Span]) -> set[str]:
    return {s["service"] for s in spans}


def orphans(spans: list[Span]) -> list[Span]:
    """Spans whose parent is not in `spans` (yet: each process exports on its own schedule)."""
    ids = {s["span_id"] for s in spans}
    return [s for s in spans if s["parent_span_id"] and s["parent_span_id"] not in ids]


# The workers continue the trace from the task's NATS headers, as consumers.
WORKERS = ("imaging", "metadata")


def consumers_of(spans: list[Span], worker: str) -> list[Span]:
    return [s for s in spans if s["service"] == f"pixmesh-{worker}" and s["kind"] == "CONSUMER"]


def complete(external_parents: int) -> Callable[[list[Span]], bool]:
    """Every hop arrived, the workers' consumer spans too (a service may be in the trace by an
    earlier span, e.g. a ListOperations the gateway made for this request, before its consumer
    span is exported), and every span's parent did too, but for `external_parents` spans whose
    parent is the caller's."""
    return lambda spans: (
        services_of(spans) >= SERVICES
        and all(consumers_of(spans, worker) for worker in WORKERS)
        and len(orphans(spans)) <= external_parents
    )


def describe(spans: list[Span]) -> str:
    return "\n".join(f"  {s['service']}: {s['name']} ({s['kind']})" for s in spans)


def assert_one_job_trace(spans: list[Span], external_parents: int) -> None:
    missing = SERVICES - services_of(spans)
    assert not missing, f"trace lacks {sorted(missing)}; it has:\n{describe(spans)}"
    names = {(s["service"], s["name"]) for s in spans}
    assert ("pixmesh-gateway", CREATE_JOB) in names
    assert ("pixmesh-jobs", "/pixmesh.jobs.v1.JobsService/CreateJob") in names
    for worker in WORKERS:
        consumers = consumers_of(spans, worker)
        assert consumers, f"no consumer span of {worker}:\n{describe(spans)}"
        assert all(s["parent_span_id"] for s in consumers)  # children, not new roots
    # One tree: every span hangs off another span of the trace, but for the caller's own.
    lost = orphans(spans)
    assert len(lost) <= external_parents, f"spans whose parent never arrived:\n{describe(lost)}"
    # What is left out to keep tracing cheap (issue 10): the pipeline's steps are events of its
    # span, statements are summaries, the rate-limit check makes no span. (A stage whose output
    # an earlier test already made is reused: no pipeline then.)
    pipelines = [s for s in spans if s["name"] == "imaging.pipeline"]
    for pipeline in pipelines:
        assert {"imaging.decode", "imaging.encode"} <= {e["name"] for e in pipeline["events"]}
    assert not [s for s in spans if s["name"].startswith("imaging.") and s not in pipelines]
    statements = [
        s["attributes"]["db.statement"] for s in spans if "db.statement" in s["attributes"]
    ]
    assert statements and all(len(st) <= 200 and "$1" not in st for st in statements), statements
    assert "EVALSHA" not in {s["name"] for s in spans}


def test_client_traceparent_spans_all_services(rest: Rest, photo_id: str, trace_file: Path) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    job = rest.create_job(
        photo_id,
        RESIZE_WEBP_METADATA,
        idempotency_key=uuid.uuid4().hex,  # a new job, not one a previous test made
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    assert rest.wait_job(job["job_id"])["state"] == "SUCCEEDED"

    spans = wait_for_spans(
        trace_file, lambda all_: [s for s in all_ if s["trace_id"] == trace_id], complete(1)
    )
    assert_one_job_trace(spans, external_parents=1)
    # Envoy joined the caller's trace: its server span is the child of the caller's span.
    (edge,) = [s for s in spans if s["service"] == "pixmesh-envoy" and s["kind"] == "SERVER"]
    assert edge["parent_span_id"] == parent_id
    assert edge["name"] == CREATE_JOB


def test_envoy_starts_the_trace(rest: Rest, photo_id: str, trace_file: Path) -> None:
    # No traceparent: Envoy is the root. Our request is found by its unique User-Agent.
    agent = f"pixmesh-trace-test/{uuid.uuid4().hex}"
    job = rest.create_job(
        photo_id,
        RESIZE_WEBP_METADATA,
        idempotency_key=uuid.uuid4().hex,
        headers={"user-agent": agent},
    )
    assert rest.wait_job(job["job_id"])["state"] == "SUCCEEDED"

    def ours(all_spans: list[Span]) -> list[Span]:
        roots = [
            s
            for s in all_spans
            if s["service"] == "pixmesh-envoy" and s["attributes"].get("user_agent") == agent
        ]
        if not roots:
            return []
        trace_id = roots[0]["trace_id"]
        return [s for s in all_spans if s["trace_id"] == trace_id]

    spans = wait_for_spans(trace_file, ours, complete(0))
    assert spans, f"no Envoy span with user_agent {agent}"
    assert_one_job_trace(spans, external_parents=0)
    roots = [s for s in spans if not s["parent_span_id"]]
    assert [(r["service"], r["name"]) for r in roots] == [("pixmesh-envoy", CREATE_JOB)]
