"""The OTLP trace sink: protobuf -> JSON records, the gRPC receiver, and the `show` tree."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from deploy.observability import otlp_sink
from deploy.observability.otlp_sink import read_spans
from deploy.observability.spans import format_trace, group_traces, request_records

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _span(span_id: str, parent: str, name: str, start: int, end: int, **kw: object) -> Span:
    return Span(
        trace_id=TRACE,
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent),
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        **kw,  # type: ignore[arg-type]
    )


def _request(service: str, *spans: Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs: ResourceSpans = request.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", AnyValue(string_value=service)))
    scope: ScopeSpans = rs.scope_spans.add()
    scope.scope.name = "test-scope"
    scope.spans.extend(spans)
    return request


def test_span_becomes_a_flat_record() -> None:
    attrs = [
        _kv("s", AnyValue(string_value="x")),
        _kv("i", AnyValue(int_value=7)),
        _kv("b", AnyValue(bool_value=True)),
        _kv("d", AnyValue(double_value=1.5)),
        _kv("a", AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
        _kv(
            "m", AnyValue(kvlist_value=KeyValueList(values=[_kv("k", AnyValue(string_value="v"))]))
        ),
        _kv("raw", AnyValue(bytes_value=b"\x01\xff")),
    ]
    span = _span(
        "00f067aa0ba902b7",
        "",
        "CreateJob",
        1_000,
        3_000_000,
        kind=Span.SPAN_KIND_SERVER,
        attributes=attrs,
        status=Status(code=Status.STATUS_CODE_ERROR, message="bad"),
        events=[Span.Event(name="exception", time_unix_nano=2_000, attributes=attrs[:1])],
    )
    (record,) = request_records(_request("pixmesh-gateway", span))
    assert record == {
        "trace_id": TRACE.hex(),
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": None,
        "name": "CreateJob",
        "service": "pixmesh-gateway",
        "kind": "SERVER",
        "start_ns": 1_000,
        "end_ns": 3_000_000,
        "status": {"code": "ERROR", "message": "bad"},
        "attributes": {
            "s": "x",
            "i": 7,
            "b": True,
            "d": 1.5,
            "a": [1],
            "m": {"k": "v"},
            "raw": "01ff",
        },
        "events": [{"name": "exception", "time_ns": 2_000, "attributes": {"s": "x"}}],
        "links": [],
        "scope": "test-scope",
    }
    json.dumps(record)  # one JSON line per span


def _tree_records() -> list[dict[str, object]]:
    root = _span("0000000000000001", "", "root", 0, 10_000_000)
    child = _span("0000000000000002", "0000000000000001", "child", 2_000_000, 5_000_000)
    grandchild = _span("0000000000000003", "0000000000000002", "leaf", 3_000_000, 4_000_000)
    orphan = _span("0000000000000004", "00000000000000ff", "orphan", 6_000_000, 7_000_000)
    return [
        *request_records(_request("a", grandchild, orphan)),
        *request_records(_request("b", child, root)),
    ]


def test_trace_tree_nests_children_and_keeps_orphans() -> None:
    (spans,) = group_traces(_tree_records()).values()
    lines = format_trace(spans).splitlines()
    assert lines[0].startswith(f"trace {TRACE.hex()}  4 spans  10.0 ms")
    body = lines[1:]
    names = [line.split("  (")[0] for line in body]
    # Parents before children, each level indented two more spaces; the span whose parent never
    # arrived is shown as a root rather than dropped.
    assert names == ["  root", "    child", "      leaf", "  orphan"]
    assert "+2.0 ms  3.0 ms" in body[1]


def test_read_spans_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"name": "a"}\n{"name": "b"}\n{"name": ')
    assert [r["name"] for r in read_spans(path)] == ["a", "b"]
    assert read_spans(tmp_path / "missing.jsonl") == []


def test_show_cli_filters_by_trace_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.jsonl"
    other = {**_tree_records()[0], "trace_id": "ff" * 16}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*_tree_records(), other]))
    assert otlp_sink.main(["show", "--file", str(path), "--trace-id", TRACE.hex()[:8]]) == 0
    out = capsys.readouterr().out
    assert TRACE.hex() in out and "ff" * 16 not in out
    assert otlp_sink.main(["show", "--file", str(path), "--trace-id", "abc"]) == 1


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "spans.jsonl"
    server = otlp_sink.serve("127.0.0.1", port, path)
    yield f"127.0.0.1:{port}", path
    server.stop(0)


def test_sink_receives_spans_from_the_otel_sdk(sink: tuple[str, Path]) -> None:
    target, path = sink
    provider = TracerProvider(resource=Resource.create({"service.name": "pixmesh-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(target, insecure=True)))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent,
        tracer.start_as_current_span("child", attributes={"pixmesh.n": 3}) as child,
    ):
        child.set_status(StatusCode.ERROR, "nope")
    provider.shutdown()

    by_name = {r["name"]: r for r in read_spans(path)}
    assert set(by_name) == {"parent", "child"}
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    assert by_name["parent"]["trace_id"] == by_name["child"]["trace_id"] == trace_id
    assert by_name["child"]["parent_span_id"] == by_name["parent"]["span_id"]
    assert by_name["parent"]["kind"] == "SERVER"
    assert by_name["child"]["service"] == "pixmesh-test"
    assert by_name["child"]["attributes"] == {"pixmesh.n": 3}
    assert by_name["child"]["status"] == {"code": "ERROR", "message": "nope"}
