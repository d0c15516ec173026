"""The OTLP encoder of services/runtime/telemetry.py writes what the SDK's encoder writes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from services.runtime import telemetry
from services.runtime.telemetry import encode_request, otlp_exporter


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "pixmesh-test", "deployment": "unit"}),
        span_limits=SpanLimits(max_span_attributes=16, max_events=3, max_links=2),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, memory
    provider.shutdown()


def varied_spans(provider: TracerProvider, memory: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    """Every kind of content a span can carry, from two scopes, under a remote parent."""
    db = provider.get_tracer("opentelemetry.instrumentation.asyncpg", "0.1", schema_url="s://db")
    app = provider.get_tracer("services.jobs")
    remote = propagate.extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=x,other=y",
        }
    )
    attrs: Attributes = {
        "s": "text",
        "empty": "",
        "unicode": "λ€😀",
        "t": True,
        "f": False,
        "zero": 0,
        "one": 1,  # same hash as True: the cache must not mix them up
        "neg": -5,
        "big": 2**62,
        "float": 1.5,
        "whole_float": 1.0,
        "strs": ["a", "b"],
        "ints": [1, -2, 3],
        "floats": [0.5],
        "bools": [True, False],
    }
    with app.start_as_current_span("root", context=remote, kind=SpanKind.SERVER) as root:
        root.set_attribute("pixmesh.job_id", "job-1")
        root.add_event("retry", {"attempt": 2, "why": "busy"})
        root.add_event("plain")
        root.set_status(Status(StatusCode.ERROR, "boom"))
        for kind in SpanKind:
            with db.start_as_current_span("SELECT", kind=kind, attributes=attrs):
                pass
        with app.start_as_current_span(
            "linked",
            links=[
                Link(root.get_span_context(), {"why": "batch"}),
                Link(root.get_span_context()),
                Link(root.get_span_context()),  # over the limit: dropped_links
            ],
        ) as linked:
            for i in range(5):  # over max_events: dropped_events
                linked.add_event(f"e{i}")
            linked.set_status(Status(StatusCode.OK))
        with app.start_as_current_span("overflowing") as over:
            for i in range(20):  # over max_span_attributes: dropped_attributes
                over.set_attribute(f"a{i}", i)
            over.set_attribute("too_big_for_int64", 2**70)  # both encoders leave it out
    with app.start_as_current_span(""):  # a new root, without a name
        pass
    # One key, values that are equal (and hash alike) in Python but not on the wire.
    for value in (1, True, 1.0, "1"):
        with app.start_as_current_span("same key", attributes={"x": value}):
            pass
    return memory.get_finished_spans()


def test_same_message_as_the_sdk_encoder(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, memory = recorded
    spans = varied_spans(provider, memory)
    assert len(spans) == 13
    ours = ExportTraceServiceRequest.FromString(encode_request(spans))
    theirs = encode_spans(spans)
    assert ours == theirs
    # Byte for byte too, once both are serialized the same (deterministic) way.
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def test_cache_is_bounded_and_still_correct(
    recorded: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, memory = recorded
    monkeypatch.setattr(telemetry, "_KV_CACHE", {})
    monkeypatch.setattr(telemetry, "_KV_CACHE_SIZE", 8)
    tracer = provider.get_tracer("t")
    for i in range(40):  # ids never repeat; "n" does
        with tracer.start_as_current_span("s", attributes={"id": f"job-{i}", "n": i % 3}):
            pass
    spans = varied_spans(provider, memory)
    for _ in range(2):  # the second time from a warm (and cleared) cache
        assert ExportTraceServiceRequest.FromString(encode_request(spans)) == encode_spans(spans)
        assert 0 < len(telemetry._KV_CACHE) <= 8


def test_exporter_sends_our_encoding(
    recorded: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, memory = recorded
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    spans = varied_spans(provider, memory)
    exporter = otlp_exporter()
    try:
        request = exporter._translate_data(spans)  # type: ignore[attr-defined]
    finally:
        exporter.shutdown()
    assert isinstance(request, ExportTraceServiceRequest)
    assert request == encode_spans(spans)


def test_empty_batch() -> None:
    assert encode_request([]) == b""
    assert ExportTraceServiceRequest.FromString(b"") == encode_spans([])
