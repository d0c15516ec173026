"""A small OTLP/gRPC trace receiver that stands in for Tempo on a machine without Docker.

Every span it receives becomes one JSON line in a file (see spans.py for the record), which tests
read with `read_spans` and people read with `show`:

    python -m deploy.observability.otlp_sink serve --port 4317 --file .pixmesh/run/traces.jsonl
    python -m deploy.observability.otlp_sink show                  # the last 10 traces, as trees
    python -m deploy.observability.otlp_sink show --trace-id 4bf9  # one trace (id prefix works)

The file is rotated (issue 16): past --max-bytes it becomes FILE.1 (the previous FILE.1 becomes
FILE.2, and so on up to --keep files; the oldest is deleted), so the sink's disk use levels off
at about (keep + 1) x max-bytes however long the stack runs. `show` reads the kept files too.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import IO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from deploy.observability.spans import (
    Record,
    format_trace,
    group_traces,
    read_spans,
    request_records,
)

__all__ = ["DEFAULT_FILE", "TraceSink", "main", "read_spans", "serve"]

# Where `make up` points the sink, so `show` needs no --file from any folder.
DEFAULT_FILE = Path(__file__).resolve().parents[2] / ".pixmesh" / "run" / "traces.jsonl"
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Rotation defaults: 64 MiB per file (about 2,000 jobs' spans), the current file and one older.
MAX_FILE_BYTES = 64 * 1024 * 1024
KEEP_FILES = 1


def rotated(path: Path, keep: int = KEEP_FILES) -> list[Path]:
    """The files of a rotated trace file that exist, oldest first (FILE.keep ... FILE.1, FILE)."""
    files = [path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1)] + [path]
    return [f for f in files if f.exists()]


class TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    """Appends each span as a JSON line; flushed per request so readers see it at once. A file
    that would pass `max_bytes` is rotated first (a request's spans stay in one file)."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_FILE_BYTES, keep: int = KEEP_FILES):
        self._path = path
        self._max_bytes = max_bytes
        self._keep = keep
        self._out: IO[str] = path.open("a", encoding="utf-8")
        self._size = path.stat().st_size
        self._lock = threading.Lock()  # the gRPC server calls us from several threads

    def _rotate(self) -> None:
        self._out.close()
        # FILE.(keep-1) -> FILE.keep (replacing it), ..., FILE -> FILE.1; keep 0: FILE goes.
        names = [self._path] + [
            self._path.with_name(f"{self._path.name}.{i}") for i in range(1, self._keep + 1)
        ]
        names[-1].unlink(missing_ok=True)
        for newer, older in zip(names[-2::-1], names[:0:-1], strict=True):
            if newer.exists():
                newer.replace(older)
        self._out = self._path.open("a", encoding="utf-8")
        self._size = 0

    def close(self) -> None:
        with self._lock:
            self._out.close()

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        lines = "".join(
            json.dumps(r, separators=(",", ":")) + "\n" for r in request_records(request)
        )
        size = len(lines.encode())
        with self._lock:
            if self._size and self._size + size > self._max_bytes:
                self._rotate()
            self._out.write(lines)
            self._out.flush()
            self._size += size
        return trace_service_pb2.ExportTraceServiceResponse()


def serve(
    host: str,
    port: int,
    path: Path,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    keep: int = KEEP_FILES,
) -> grpc.Server:
    """Start the sink (OTLP trace service + grpc.health.v1) and return the running server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    sink = TraceSink(path, max_bytes=max_bytes, keep=keep)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server


def _serve_forever(args: argparse.Namespace) -> int:
    server = serve(args.host, args.port, Path(args.file), max_bytes=args.max_bytes, keep=args.keep)
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"otlp sink on {args.host}:{args.port} -> {args.file}", flush=True)
    stopped.wait()
    server.stop(grace=1).wait()
    return 0


def _show(args: argparse.Namespace) -> int:
    spans: list[Record] = []
    for f in rotated(Path(args.file), args.keep):
        spans.extend(read_spans(f))
    traces = group_traces(spans)
    if args.trace_id:
        traces = {k: v for k, v in traces.items() if k.startswith(args.trace_id.lower())}
        if not traces:
            print(f"no trace {args.trace_id} in {args.file}", file=sys.stderr)
            return 1
    elif args.service:
        traces = {k: v for k, v in traces.items() if any(s["service"] == args.service for s in v)}
    selected = list(traces.values())[-args.limit :] if args.limit > 0 else list(traces.values())
    for spans in selected:
        print(format_trace(spans, show_attributes=args.attributes))
        print()
    if not selected:
        print(f"no traces in {args.file}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.observability.otlp_sink")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="receive OTLP/gRPC traces into a JSON-lines file")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=4317)
    serve_cmd.add_argument("--file", default=str(DEFAULT_FILE))
    serve_cmd.add_argument(
        "--max-bytes", type=int, default=MAX_FILE_BYTES, help="rotate the file past this size"
    )
    serve_cmd.add_argument("--keep", type=int, default=KEEP_FILES, help="rotated files kept")
    show_cmd = commands.add_parser("show", help="print traces as indented span trees")
    show_cmd.add_argument("--file", default=str(DEFAULT_FILE))
    show_cmd.add_argument("--keep", type=int, default=KEEP_FILES, help="rotated files to read")
    show_cmd.add_argument("--trace-id", help="one trace (a prefix of its hex id is enough)")
    show_cmd.add_argument("--service", help="only traces that touch this service.name")
    show_cmd.add_argument("--limit", type=int, default=10, help="most recent N traces (0: all)")
    show_cmd.add_argument("--attributes", action="store_true", help="print span attributes")
    args = parser.parse_args(argv)
    return _serve_forever(args) if args.command == "serve" else _show(args)


if __name__ == "__main__":
    raise SystemExit(main())
