"""CPU per unary RPC through the runtime's own server and channel set-up, piece by piece.

One process is both server and client (loopback TCP), so `time.process_time` counts both ends
and gRPC's own threads (poller, the span exporter's) without the machine's other processes:

    flock /tmp/pixmesh-bench.lock .venv/bin/python -m bench.rpc_overhead --calls 2000 --rounds 4

Each configuration is the full stack as `services/runtime/server.py` installs it (server:
ClosingStreams, the OTel server interceptor, metrics, trust, errors; channel: metrics and trust
interceptors, plus the OTel client interceptors `GrpcAioInstrumentorClient` adds), with one piece
taken out, and `bare` (none of them). Spans are recorded by the SDK's TracerProvider with the
services' span processors and exported by a BatchSpanProcessor to an exporter that encodes them
as OTLP protobuf and drops the bytes (`--export otlp` sends them with the OTLP gRPC exporter to
the endpoint the standard variables name, which must be listening: e.g. a `make up` stack's
sink, gzip or not per OTEL_EXPORTER_OTLP_COMPRESSION; `--export none` records spans and exports
nothing). Configurations alternate
within every round; the figure is microseconds of process CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from services.runtime import metrics, telemetry, trust
from services.runtime.server import ErrorInterceptor, channel_interceptors, server_interceptors

METHOD = "/pixmesh.bench.v1.Echo/Unary"
PIECES = ("otel-server", "otel-client", "metrics-server", "metrics-client", "trust", "errors")


class EncodingExporter(SpanExporter):
    """What the OTLP exporter does to a batch before it sends it: encode and serialize."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class Config:
    name: str
    without: frozenset[str]


def configs(only: Sequence[str] | None) -> list[Config]:
    found = [
        Config("bare", frozenset(PIECES)),
        Config("full", frozenset()),
        *(Config(f"-{p}", frozenset({p})) for p in PIECES),
        Config("-otel", frozenset({"otel-server", "otel-client"})),
        Config("-client-interceptors", frozenset({"otel-client", "metrics-client"})),
    ]
    return [c for c in found if not only or c.name in only]


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _server_interceptors(config: Config) -> list[Any]:
    """The services' own list (`server_interceptors`), less the pieces `config` leaves out."""
    kinds: dict[str, type] = {
        "otel-server": type(telemetry.server_interceptor()),
        "metrics-server": metrics.ServerMetricsInterceptor,
        "trust": trust.TrustInterceptor,
        "errors": ErrorInterceptor,
    }
    dropped = tuple(kinds[p] for p in config.without if p in kinds)
    return [i for i in server_interceptors(frozenset()) if not isinstance(i, dropped)]


def _server(config: Config) -> grpc.aio.Server:
    server = grpc.aio.server(interceptors=_server_interceptors(config))
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    service, _, method = METHOD.lstrip("/").partition("/")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    return server


def _client_interceptors(config: Config) -> list[Any]:
    """The services' channel list (`channel_interceptors`), less the pieces `config` leaves
    out, then OTel's: GrpcAioInstrumentorClient appends its own after a channel's (instrumented
    insecure_channel: interceptors + aio_client_interceptors())."""
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    kinds = {
        "metrics-client": {type(i) for i in metrics.client_interceptors()},
        "trust": {type(i) for i in trust.client_interceptors()},
    }
    dropped = tuple(t for p in config.without for t in kinds.get(p, ()))
    out: list[Any] = [i for i in channel_interceptors() if not isinstance(i, dropped)]
    if "otel-client" not in config.without:
        out += aio_client_interceptors()  # type: ignore[no-untyped-call]
    return out


async def _round(config: Config, calls: int, payload: bytes) -> float:
    server = _server(config)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=_client_interceptors(config)
    )
    call = channel.unary_unary(METHOD)
    tracer = trace.get_tracer("bench")
    try:
        for _ in range(50):  # warm: connection, caches
            await call(payload, timeout=5)
        started = time.process_time()
        for _ in range(calls):
            # A parent span, as a handler calling a sibling has one (the client span's parent).
            with tracer.start_as_current_span("caller"):
                await call(payload, timeout=5)
        return (time.process_time() - started) / calls * 1e6
    finally:
        await channel.close()
        await server.stop(None)


async def _run(args: argparse.Namespace) -> None:
    chosen = configs(args.only)
    results: dict[str, list[float]] = {c.name: [] for c in chosen}
    payload = b"x" * args.payload
    for r in range(args.rounds):
        order = chosen if r % 2 == 0 else list(reversed(chosen))
        for config in order:
            results[config.name].append(await _run_one(config, args.calls, payload, args.chain))
    width = max(len(n) for n in results)
    base = statistics.median(results["full"]) if "full" in results else None
    for name, values in results.items():
        med = statistics.median(values)
        delta = f"  full-this {base - med:7.1f}" if base is not None and name != "full" else ""
        runs = " ".join(f"{v:7.1f}" for v in values)
        print(f"{name:<{width}}  median {med:7.1f} us/call  [{runs}]{delta}")


async def _run_one(config: Config, calls: int, payload: bytes, chain: bool) -> float:
    value = await (_chain_round if chain else _round)(config, calls, payload)
    # Let the exporter drain what this round recorded before the next is timed.
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
    return value


class _Metadatum(NamedTuple):
    key: str
    value: str


class _Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _Context:
    """What the server interceptors read of a grpc.aio servicer context, for `--chain`."""

    def __init__(self, metadata: tuple[_Metadatum, ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def code(self) -> None:
        return None


async def _chain_round(config: Config, calls: int, payload: bytes) -> float:
    """The server's interceptors without gRPC: what grpc.aio does per call (ask each for the
    handler, then call it), with a context that carries a caller's traceparent and token."""
    interceptors = _server_interceptors(config)
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    metadata: dict[str, str] = {}
    with trace.get_tracer("bench").start_as_current_span("caller"):
        propagate.inject(metadata)
    metadata[trust.HEADER] = trust._minter.token() if trust._minter else ""
    context = _Context(tuple(_Metadatum(k, v) for k, v in metadata.items()))
    call = _Details(METHOD, tuple(metadata.items()))

    async def step(i: int, d: Any) -> Any:
        if i == len(interceptors):
            return handler
        return await interceptors[i].intercept_service(lambda dd: step(i + 1, dd), d)

    for _ in range(50):
        await (await step(0, call)).unary_unary(payload, context)
    started = time.process_time()
    for _ in range(calls):
        await (await step(0, call)).unary_unary(payload, context)
    return (time.process_time() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--payload", type=int, default=200, help="request bytes")
    parser.add_argument(
        "--only", type=lambda s: s.split(","), help="configurations to run, comma separated"
    )
    parser.add_argument(
        "--chain",
        action="store_true",
        help="the server's interceptors alone, called as grpc.aio does, without gRPC",
    )
    parser.add_argument("--export", choices=("encode", "otlp", "none"), default="encode")
    args = parser.parse_args(argv)

    metrics.configure("bench")
    trust.configure("bench-secret-" + "x" * 32, "bench")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "bench"}))
    provider.add_span_processor(telemetry.ShortStatements())
    if args.export == "encode":
        provider.add_span_processor(BatchSpanProcessor(EncodingExporter()))
    elif args.export == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    print(
        f"{args.calls} calls x {args.rounds} rounds, export {args.export}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    asyncio.run(_run(args))
    print(f"load {os.getloadavg()[0]:.1f}")
    provider.shutdown()


if __name__ == "__main__":
    main()
