"""OpenTelemetry set-up, once per process.

The exporter is configured by the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...), read by the SDK itself. With no endpoint set and
OTEL_TRACES_EXPORTER unset, spans are still created (trace ids in logs) but not exported.
Instrumentation must run before any gRPC channel is created, so `serve()` calls this first.

Spans leave through the SDK's BatchSpanProcessor (a background thread; OTEL_BSP_* variables) and
the OTLP/gRPC exporter, with one change: the batch is encoded by `encode_request` below instead
of the SDK's encoder, which builds a protobuf object per span, attribute and value and costs about
110 us of CPU per span on the 2-core development machine (~75 spans per job across the mesh);
this one writes the wire format directly and caches the encoding of repeated attributes, ~40 us.
Same bytes on the wire (tests/services/runtime/test_telemetry.py compares the two on every kind
of span content).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def setup_telemetry(service: str) -> TracerProvider:
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    exporter_kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    if exporter_kind == "otlp" and _otlp_configured():
        provider.add_span_processor(BatchSpanProcessor(otlp_exporter()))
    elif exporter_kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument()
    _provider = provider
    return provider


def shutdown_telemetry() -> None:
    if _provider is not None:
        _provider.shutdown()


def otlp_exporter() -> SpanExporter:
    """The SDK's OTLP/gRPC exporter (configured by OTEL_EXPORTER_OTLP_*), with `encode_request`."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    class Exporter(OTLPSpanExporter):
        def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
            # Parsing the bytes back is C code (upb), a few us per span: the stub wants a message.
            return ExportTraceServiceRequest.FromString(encode_request(data))

    return Exporter()


def _otlp_configured() -> bool:
    return any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _instrument() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # These instrumentors' constructors are unannotated upstream (redis's is typed).
    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument()
    BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]


def inject_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (W3C traceparent) into message headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    return propagate.extract(dict(headers or {}))


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


# -- OTLP encoding ---------------------------------------------------------------------------
# The field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common.proto; the
# first byte of each field is its tag, (number << 3) | wire type (0 varint, 1 fixed64,
# 2 length-delimited, 5 fixed32). What the SDK's encoder writes is mirrored exactly, including the
# fields it always sets (kind, status, flags); the resource and the scope, once per batch, are
# left to the SDK's own functions.

_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# SpanFlags: the parent's is_remote is known (always), and it is true.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_INT64 = range(-(1 << 63), 1 << 63)
# Encoded KeyValue per (key, type, value): most attributes repeat (db.system, a statement, a
# subject). Cleared when full, so values that never repeat (ids) cannot pin it.
_KV_CACHE: dict[tuple[str, type, Any], bytes] = {}
_KV_CACHE_SIZE = 4096


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field; `tag` is its first byte (fields 1..15)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """The content of an AnyValue (a oneof: written even when it is a zero value)."""
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"{value} does not fit in an int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    # bytes, sequences, mappings, None: rare, and the SDK's encoder knows them all.
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_value

    encoded: bytes = _encode_value(value).SerializeToString()
    return encoded


def _key_value(key: str, value: Any) -> bytes:
    return _field(0x0A, key.encode()) + _field(0x12, _any_value(value))


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue field `tag`; a value that cannot be encoded is logged and left out,
    as the SDK's encoder does."""
    if not attributes:
        return b""
    parts = []
    for key, value in attributes.items():
        try:
            cache_key = (key, value.__class__, value)
            kv = _KV_CACHE.get(cache_key)
        except TypeError:  # unhashable (a list)
            cache_key, kv = None, None
        if kv is None:
            try:
                kv = _key_value(key, value)
            except Exception:
                log.exception("cannot encode the span attribute %s", key)
                continue
            if cache_key is not None:
                if len(_KV_CACHE) >= _KV_CACHE_SIZE:
                    _KV_CACHE.clear()
                _KV_CACHE[cache_key] = kv
        parts.append(_field(tag, kv))
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)


def encode_span(span: ReadableSpan) -> bytes:
    """One opentelemetry.proto.trace.v1.Span."""
    ctx = span.get_span_context()
    assert ctx is not None
    parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08"]
    parts.append(ctx.span_id.to_bytes(8, "big"))
    if ctx.trace_state:
        state = ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())
        parts.append(_field(0x1A, state.encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(0x2A, span.name.encode()))
    parts.append(_KIND[span.kind])
    if span.start_time:
        parts += (b"\x39", _FIXED64(span.start_time))
    if span.end_time:
        parts += (b"\x41", _FIXED64(span.end_time))
    parts.append(_attributes(0x4A, span.attributes))
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    for event in span.events:
        ev = [b"\x09", _FIXED64(event.timestamp)] if event.timestamp else []
        if event.name:
            ev.append(_field(0x12, event.name.encode()))
        ev.append(_attributes(0x1A, event.attributes))
        if event.dropped_attributes:
            ev += (b"\x20", _varint(event.dropped_attributes))
        parts.append(_field(0x5A, b"".join(ev)))
    if span.dropped_events:
        parts += (b"\x60", _varint(span.dropped_events))
    for link in span.links:
        lk = [b"\x0a\x10", link.context.trace_id.to_bytes(16, "big"), b"\x12\x08"]
        lk.append(link.context.span_id.to_bytes(8, "big"))
        lk.append(_attributes(0x22, link.attributes))
        if link.dropped_attributes:
            lk += (b"\x28", _varint(link.dropped_attributes))
        lk += (b"\x35", _FIXED32(_flags(link.context)))
        parts.append(_field(0x6A, b"".join(lk)))
    if span.dropped_links:
        parts += (b"\x70", _varint(span.dropped_links))
    status = b""
    if span.status.description:
        status += _field(0x12, span.status.description.encode())
    if span.status.status_code.value:
        status += bytes((0x18, span.status.status_code.value))
    parts.append(_field(0x7A, status))
    parts += (b"\x85\x01", _FIXED32(_flags(parent)))  # field 16, fixed32
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest: spans grouped by resource, then scope, in first-seen order."""
    from opentelemetry.exporter.otlp.proto.common._internal import (
        _encode_instrumentation_scope,
        _encode_resource,
    )

    # By identity: a process has one Resource, and hashing one costs a json.dumps.
    groups: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
    for span in spans:
        resource = span.resource
        group = groups.get(id(resource))
        if group is None:
            group = groups[id(resource)] = (resource, {})
        scope = span.instrumentation_scope or None
        group[1].setdefault(scope, []).append(_field(0x12, encode_span(span)))
    out = []
    for resource, scopes in groups.values():
        body = [_field(0x0A, _encode_resource(resource).SerializeToString())]
        for scope, encoded in scopes.items():
            # Annotated as taking a scope, written to take None too (an empty scope).
            pb_scope = _encode_instrumentation_scope(scope)  # type: ignore[arg-type]
            scope_spans = [_field(0x0A, pb_scope.SerializeToString())]
            scope_spans += encoded
            if scope is not None and scope.schema_url:
                scope_spans.append(_field(0x1A, scope.schema_url.encode()))
            body.append(_field(0x12, b"".join(scope_spans)))
        if resource.schema_url:
            body.append(_field(0x1A, resource.schema_url.encode()))
        out.append(_field(0x0A, b"".join(body)))
    return b"".join(out)
