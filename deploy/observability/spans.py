"""OTLP spans as flat JSON records, and a tree view of them per trace.

One record per span, one JSON object per line in the sink's file:

    {"trace_id": "4bf9...", "span_id": "00f0...", "parent_span_id": null, "name": "...",
     "service": "pixmesh-gateway", "kind": "SERVER", "start_ns": 1, "end_ns": 2,
     "status": {"code": "ERROR", "message": "..."}, "attributes": {...},
     "events": [{"name": "exception", "time_ns": 1, "attributes": {...}}],
     "links": [{"trace_id": "...", "span_id": "..."}], "scope": "opentelemetry.instrumentation.grpc"}
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Record = dict[str, Any]


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def _enum_name(full: str, prefix: str) -> str:
    return full.removeprefix(prefix)


def span_record(span: Span, service: str | None, scope: str) -> Record:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex() or None,
        "name": span.name,
        "service": service,
        "kind": _enum_name(Span.SpanKind.Name(span.kind), "SPAN_KIND_"),
        "start_ns": span.start_time_unix_nano,
        "end_ns": span.end_time_unix_nano,
        "status": {
            "code": _enum_name(Status.StatusCode.Name(span.status.code), "STATUS_CODE_"),
            "message": span.status.message,
        },
        "attributes": attributes(span.attributes),
        "events": [
            {"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes(e.attributes)}
            for e in span.events
        ],
        "links": [
            {"trace_id": ln.trace_id.hex(), "span_id": ln.span_id.hex()} for ln in span.links
        ],
        "scope": scope,
    }


def request_records(request: ExportTraceServiceRequest) -> Iterator[Record]:
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield span_record(span, service, scope_spans.scope.name)


def read_spans(path: Path | str) -> list[Record]:
    """Every span in a sink file, in arrival order (a torn last line is skipped)."""
    records: list[Record] = []
    try:
        with Path(path).open() as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the sink is mid-write
    except FileNotFoundError:
        pass
    return records


def group_traces(records: Iterable[Record]) -> dict[str, list[Record]]:
    """trace id -> spans sorted by start, traces ordered by their first span's start."""
    traces: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        traces[record["trace_id"]].append(record)
    for spans in traces.values():
        spans.sort(key=lambda r: r["start_ns"])
    return dict(sorted(traces.items(), key=lambda item: item[1][0]["start_ns"]))


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def format_trace(spans: Sequence[Record], *, show_attributes: bool = False) -> str:
    """An indented tree: children under parents; spans whose parent never arrived are roots."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[Record]] = defaultdict(list)
    for span in spans:
        parent = span["parent_span_id"]
        children[parent if parent in ids else None].append(span)
    begin = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(begin / 1e9))
    services = sorted({s["service"] or "?" for s in spans})
    lines = [
        f"trace {spans[0]['trace_id']}  {len(spans)} spans  {_ms(end - begin)}  {started}  "
        f"[{', '.join(services)}]"
    ]

    def walk(span: Record, depth: int) -> None:
        pad = "  " * (depth + 1)
        status = span["status"]
        error = f"  ERROR {status['message']}".rstrip() if status["code"] == "ERROR" else ""
        lines.append(
            f"{pad}{span['name']}  ({span['service']}, {span['kind'].lower()})  "
            f"+{_ms(span['start_ns'] - begin)}  {_ms(span['end_ns'] - span['start_ns'])}{error}"
        )
        if show_attributes:
            for key, value in sorted(span["attributes"].items()):
                lines.append(f"{pad}    {key}={json.dumps(value)}")
        for event in span["events"]:
            attrs = event["attributes"]
            # An exception event is the one thing worth reading without --attributes.
            detail = f"{attrs.get('exception.type', '')}: {attrs.get('exception.message', '')}"
            detail = f"  {detail}" if event["name"] == "exception" else ""
            lines.append(f"{pad}    event {event['name']} +{_ms(event['time_ns'] - begin)}{detail}")
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)
