"""Tracing set-up (services/runtime/telemetry.py): asyncpg spans carry a summary of their statement,
not its SQL; the server traces every call but the health service's."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import filters
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime.telemetry import ShortStatements, statement_summary, traced_call

# A statement of the jobs service's shape: a CTE that writes, then a read that joins and locks.
LOCK_FOR_EVENT = """WITH fresh AS (
        INSERT INTO jobs.processed_events (event_id) VALUES ($2)
        ON CONFLICT DO NOTHING RETURNING event_id)
    SELECT j.job_id, s.idx, w.state FROM jobs.jobs j
        JOIN jobs.stages s ON s.job_id = j.job_id
        LEFT JOIN jobs.webhook_deliveries w ON w.job_id = j.job_id
    WHERE j.job_id = $1 AND EXISTS (SELECT FROM fresh) ORDER BY s.idx FOR UPDATE OF j, s"""


def test_summary_names_the_tables_written_then_read() -> None:
    assert statement_summary(LOCK_FOR_EVENT) == (
        "INSERT jobs.processed_events; SELECT jobs.jobs jobs.stages jobs.webhook_deliveries"
    )
    # FOR UPDATE OF is a lock, not a write.
    assert statement_summary("SELECT x FROM a.t FOR UPDATE OF t") == "SELECT a.t"
    assert statement_summary("COMMIT;") == "COMMIT"


def test_asyncpg_spans_lose_their_sql_and_others_keep_their_attributes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(ShortStatements())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    asyncpg = provider.get_tracer("opentelemetry.instrumentation.asyncpg")
    other = provider.get_tracer("services.jobs.service")

    with asyncpg.start_as_current_span("WITH", attributes={"db.statement": LOCK_FOR_EVENT}):
        pass
    with other.start_as_current_span("WITH", attributes={"db.statement": LOCK_FOR_EVENT}):
        pass

    db, kept = exporter.get_finished_spans()
    assert db.attributes is not None and kept.attributes is not None
    assert db.name == db.attributes["db.statement"] == statement_summary(LOCK_FOR_EVENT)
    assert (kept.name, kept.attributes["db.statement"]) == ("WITH", LOCK_FOR_EVENT)


class _Details(grpc.HandlerCallDetails):  # type: ignore[misc]
    def __init__(self, method: str | bytes) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_every_call_but_health_is_traced_as_the_instrumentations_filter_says() -> None:
    theirs = filters.negate(filters.service_name("grpc.health.v1.Health"))
    methods = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/pixmesh.jobs.v1.JobsService/CreateJob",
        "/pixmesh.gateway.v1.GatewayService/GetJob",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.health.v1.HealthX/Check",
    ]
    for method in methods:
        assert traced_call(_Details(method)) == theirs(_Details(method)), method
        assert traced_call(_Details(method.encode())) == theirs(_Details(method)), method
    assert not traced_call(_Details("/grpc.health.v1.Health/Check"))
    assert traced_call(_Details("/pixmesh.jobs.v1.JobsService/CreateJob"))
