"""The outbox relay publishes each message in the trace context of the change that wrote it,
with no span of its own (services/jobs/outbox.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import asyncpg
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.jobs import outbox as outbox_module
from services.jobs.outbox import OutboxRelay
from services.jobs.service import JobsService
from services.runtime.bus import Bus, task_subject
from tests.services.jobs.test_repository import TENANT, image, resize


class RecordingBus:
    """Bus.publish_raw's header handling, recording what would be published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, dict[str, str]]] = []

    async def publish_raw(
        self,
        subject: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        inject_trace: bool = True,
    ) -> None:
        hdrs = dict(headers or {})
        if inject_trace:
            propagate.inject(hdrs)
        self.published.append((subject, msg_id or "", hdrs))


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
    bus = RecordingBus()
    await OutboxRelay(pool, cast(Bus, bus)).relay_once()

    ctx = request.get_span_context()
    writer = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    (task,) = [
        h
        for subject, msg_id, h in bus.published
        if subject.startswith(task_subject("")) and msg_id.startswith(job.job_id)
    ]
    assert task["traceparent"] == writer
    assert [s.name for s in exporter.get_finished_spans()] == ["CreateJob"]
