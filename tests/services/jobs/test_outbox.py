"""The outbox relay publishes each message in the trace context of the change that wrote it,
with no span of its own (services/jobs/outbox.py)."""

from __future__ import annotations

from typing import cast

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.jobs import outbox as outbox_module
from services.jobs.outbox import OutboxRelay
from services.jobs.service import JobsService
from services.runtime.bus import Bus, task_subject
from tests.services.jobs.test_repository import TENANT, image, resize


class RecordingJetStream:
    """A JetStream context that records what the real Bus publishes through it."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, dict[str, str]]] = []

    def jetstream(self) -> RecordingJetStream:  # as a NATS client gives its context
        return self

    async def publish(
        self, subject: str, payload: bytes, *, headers: dict[str, str], timeout: float
    ) -> None:
        self.published.append((subject, headers.get("Nats-Msg-Id", ""), dict(headers)))


async def test_a_task_travels_in_its_writers_trace_context_without_a_relay_span(
    service: JobsService, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Whatever tracer the relay module would use records here.
    monkeypatch.setattr(
        outbox_module, "_tracer", provider.get_tracer(outbox_module.__name__), raising=False
    )
    with provider.get_tracer("test").start_as_current_span("CreateJob") as request:
        job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    recorder = RecordingJetStream()
    await OutboxRelay(pool, Bus(cast(NatsClient, recorder))).relay_once()

    ctx = request.get_span_context()
    writer = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    (task,) = [
        h
        for subject, msg_id, h in recorder.published
        if subject.startswith(task_subject("")) and msg_id.startswith(job.job_id)
    ]
    assert task["traceparent"] == writer
    assert [s.name for s in exporter.get_finished_spans()] == ["CreateJob"]
