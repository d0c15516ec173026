"""OpenTelemetry set-up, once per process.

The exporter is configured by the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...), read by the SDK itself. With no endpoint set and
OTEL_TRACES_EXPORTER unset, spans are still created (trace ids in logs) but not exported.
Instrumentation must run before any gRPC channel is created, so `serve()` calls this first.

asyncpg's spans carry a summary of their statement (the tables it writes and reads), not its full
SQL: the jobs service's statements are 1-2 kB each, and were half of a job's span bytes.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, MutableMapping

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def setup_telemetry(service: str) -> TracerProvider:
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(ShortStatements())  # first: before any exporter sees the span
    exporter_kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    if exporter_kind == "otlp" and _otlp_configured():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
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


def _otlp_configured() -> bool:
    return any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _instrument() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # These instrumentors' constructors are unannotated upstream (redis's is typed). Servers
    # are traced by `server_interceptor`, placed by services/runtime/server.py (the server
    # instrumentor would put it first, where nothing can close its streams).
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument()
    BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]


def server_interceptor() -> grpc.aio.ServerInterceptor:
    """The gRPC server interceptor that traces each call (a server span, the caller's trace
    context restored from its metadata), but the health service's: a probe every few seconds is
    no trace worth keeping, and the interceptor cannot wrap Health/Watch, which writes its
    answers itself (`context.write`): through it, Watch failed with UNKNOWN
    (open-telemetry/opentelemetry-python-contrib#3066)."""
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(filter_=traced_call)  # type: ignore[no-untyped-call]


_UNTRACED_PREFIX = "/grpc.health.v1.Health/"


def traced_call(details: object) -> bool:
    """Whether the server traces a call: all but the health service's. One prefix test on the
    call's method (`/<service>/<method>`): the instrumentation's own `negate(service_name(...))`
    splits and normalises the path as a file path, with ABC isinstance checks, on every call
    (~2% of a service's busy samples under CreateJob load)."""
    method = getattr(details, "method", "")
    if isinstance(method, bytes):
        method = method.decode()
    return not str(method).startswith(_UNTRACED_PREFIX)


_ASYNCPG = "opentelemetry.instrumentation.asyncpg"
_STATEMENT = "db.statement"
_WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+\.\w+)", re.IGNORECASE)
_READ = re.compile(r"\b(?:FROM|JOIN)\s+(\w+\.\w+)", re.IGNORECASE)


@functools.lru_cache(maxsize=512)
def statement_summary(sql: str) -> str:
    """What a statement does, in a few words: each schema-qualified table it writes (`INSERT
    jobs.jobs`), then those it reads (`SELECT jobs.jobs jobs.stages`); a statement naming no
    table is its first word (`COMMIT`). Our statements are constants, hence the cache."""
    words: list[str] = []
    written: set[str] = set()
    for verb, table in _WRITE.findall(sql):
        word = f"{verb.split()[0].upper()} {table}"
        if word not in words:
            words.append(word)
            written.add(table)
    read = [t for t in dict.fromkeys(_READ.findall(sql)) if t not in written]
    if read:
        words.append("SELECT " + " ".join(read))
    if not words:
        first = sql.split(maxsplit=1)
        return first[0].rstrip(";").upper() if first else ""
    return "; ".join(words)[:200]


class ShortStatements(SpanProcessor):
    """Replaces an asyncpg span's full SQL (`db.statement`) by `statement_summary`, and names the
    span by it (the instrumentation names it by the first word: `WITH`, `SELECT`), when the span
    starts, so no exporter ever sees the full text. The span, its timing and its errors stay."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        scope = span.instrumentation_scope
        if scope is None or scope.name != _ASYNCPG or not span.is_recording():
            return
        sql = (span.attributes or {}).get(_STATEMENT)
        if isinstance(sql, str):
            summary = statement_summary(sql)
            span.set_attribute(_STATEMENT, summary)
            span.update_name(summary)


def inject_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (W3C traceparent) into message headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> context.Context:
    return propagate.extract(dict(headers or {}))


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
