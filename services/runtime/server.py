"""gRPC server bootstrap shared by every service.

`serve(settings, build)` is all a service's `__main__` calls: it sets up logs and tracing, enters
the service's composition root (`build`, an async context manager yielding an `App`), serves the
App's servicers with health, reflection and the error interceptor, runs its background workers
(JetStream consumers), and drains gracefully on SIGTERM/SIGINT: health -> NOT_SERVING, workers
stop fetching and finish in-flight tasks, then the server stops with a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import math
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import asyncpg
import grpc
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pixmesh.errors import STATUS_DETAILS_KEY
from services.runtime import metrics, trust
from services.runtime.errors import InvalidArgument, ServiceError
from services.runtime.handlers import ClosingStreams, WrappingInterceptor, rewrap
from services.runtime.logs import setup_logging
from services.runtime.outage import as_unavailable
from services.runtime.settings import ServiceSettings
from services.runtime.telemetry import server_interceptor, setup_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
"""The servicer context every handler receives (message types vary per method)."""

# A coroutine function, not any awaitable: `_serve` hands it to asyncio.create_task.
Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A background loop: runs until the event is set, then finishes in-flight work and returns."""


_Servicer = TypeVar("_Servicer")


@dataclass(frozen=True)
class GrpcService:
    """A servicer to expose: its full proto name (for health/reflection) and how to add it."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    # Public: callable without a service token (the gateway's API, which checks API keys).
    public: bool = False

    @classmethod
    def of(
        cls,
        file: FileDescriptor,
        service: str,
        add: Callable[[_Servicer, grpc.aio.Server], None],
        servicer: _Servicer,
        public: bool = False,
    ) -> GrpcService:
        """`servicer` as service `service` of the proto `file` (a _pb2 module's DESCRIPTOR),
        added by its generated `add_<service>Servicer_to_server`."""
        name = file.services_by_name[service].full_name
        return cls(name, lambda server: add(servicer, server), public)


@dataclass
class App:
    services: Sequence[GrpcService]
    workers: Sequence[Worker] = field(default_factory=tuple)


S = TypeVar("S", bound=ServiceSettings)
AppFactory = Callable[[S], AbstractAsyncContextManager[App]]


def serve(settings: S, build: AppFactory[S]) -> None:
    setup_logging(settings.service_name, settings.log_level)
    setup_telemetry(f"pixmesh-{settings.service_name}")
    try:
        asyncio.run(_serve(settings, build))
    finally:
        shutdown_telemetry()


async def _serve(settings: S, build: AppFactory[S]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Up before the composition root, so a slow start (migrations, models) can be watched.
    metrics_server = metrics.start_metrics_server(settings)
    try:
        await _serve_app(settings, build, stop)
    finally:
        if metrics_server is not None:
            metrics_server.stop()


def server_interceptors(public: frozenset[str]) -> list[grpc.aio.ServerInterceptor]:
    """Every service's server interceptors, outermost first (`public`: the services callers
    outside the mesh may reach). Streams closed in their own task first (ClosingStreams), then
    tracing; metrics next: it sees the final status, ErrorInterceptor's aborts too."""
    return [
        ClosingStreams(),
        server_interceptor(),
        metrics.ServerMetricsInterceptor(),
        trust.TrustInterceptor(public, _abort),
        ErrorInterceptor(),
    ]


def channel_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of every channel to a sibling service (`channel`)."""
    return [*metrics.client_interceptors(), *trust.client_interceptors()]


async def _serve_app(settings: S, build: AppFactory[S], stop: asyncio.Event) -> None:
    # Before build: the app's channels sign their calls with this process's service token.
    trust.configure(settings.service_token_secret.get_secret_value(), settings.service_name)
    async with build(settings) as app:
        server = grpc.aio.server(
            interceptors=server_interceptors(frozenset(s.name for s in app.services if s.public)),
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # Envoy passes a REST request's headers on as metadata and refuses more than
                # 60 KiB itself (431); gRPC's default (16 KiB, some refused from 8) answered
                # 20 KB of cookies with RESOURCE_EXHAUSTED, a 429 that tells clients to retry.
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
                *(
                    [("grpc.max_connection_age_ms", round(settings.max_connection_age_s * 1000))]
                    if settings.max_connection_age_s
                    else []
                ),
            ],
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        names = [s.name for s in app.services]
        for svc in app.services:
            svc.register(server)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        port = server.add_insecure_port(settings.grpc_address)
        if port == 0:
            raise RuntimeError(f"cannot bind gRPC port {settings.grpc_address}")
        await server.start()
        _freeze_startup_objects()

        workers = [
            asyncio.create_task(w(stop), name=f"worker-{i}") for i, w in enumerate(app.workers)
        ]
        for name in ("", *names):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": settings.grpc_address, "services": names})

        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *workers], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stopper and t.exception() is not None]
        for t in crashed:
            log.error("background worker crashed", exc_info=t.exception())

        log.info("draining", extra={"timeout_s": settings.drain_timeout_s})
        await health_servicer.enter_graceful_shutdown()
        stop.set()
        stopper.cancel()
        if workers:
            _, pending = await asyncio.wait(workers, timeout=settings.drain_timeout_s)
            for t in pending:
                t.cancel()
        await server.stop(grace=min(5.0, settings.drain_timeout_s))
        log.info("stopped")
        if crashed:
            raise SystemExit(1)


def _freeze_startup_objects() -> None:
    """Move what start-up made (modules, protobuf descriptors, the S3 service model, channels,
    pools: ~150,000 objects in a service) out of the collector's reach: they live as long as the
    process, and every full collection scanned them all again, a pause of ~80 ms on the event
    loop about once per 400-1,000 cheap jobs in each service (bench/gc.py)."""
    gc.collect()
    gc.freeze()


def time_left(context: Ctx, default: float) -> float:
    """Deadline for an outbound call: the caller's remaining time, capped at `default`.

    Python gRPC does not propagate deadlines, so every hop passes this explicitly.
    """
    remaining = context.time_remaining()
    return default if remaining is None else max(0.0, min(remaining, default))


# A message may quote what the caller sent (an id, a field); it travels in HTTP/2 trailers, where
# a long one made the stream fail at the proxy (502 for a 1 MiB image_id), so it is cut here.
MAX_MESSAGE_CHARS = 1024


def client_message(err: ServiceError) -> str:
    text = err.message
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def status_details(err: ServiceError) -> status_pb2.Status:
    """The google.rpc.Status a client gets for `err` (the codec is pixmesh.errors')."""
    return err.status(client_message(err)).to_proto()


async def _abort(context: Ctx, exc: BaseException) -> None:
    if isinstance(exc, ServiceError):
        err = exc
        log.info("request failed", extra={"code": err.code.name, "reason": err.reason})
    elif (outage := as_unavailable(exc)) is not None:
        # A dependency is down: UNAVAILABLE (retried by clients), its text only in the log.
        log.warning("dependency unavailable", exc_info=exc)
        err = outage
    elif isinstance(exc, asyncpg.exceptions.CharacterNotInRepertoireError):
        # Postgres text cannot hold U+0000: a string the caller sent (an id, a file name, an
        # idempotency key) had one. The caller's error, not an internal one.
        err = InvalidArgument(NUL_IN_REQUEST)
        log.info("request failed", extra={"code": err.code.name, "reason": err.reason})
    else:
        # Internal text never reaches clients; the log keeps it, joined by trace id.
        log.exception("unhandled error", exc_info=exc)
        from services.runtime.errors import Internal

        err = Internal()
    details = status_details(err).SerializeToString()
    metadata: tuple[tuple[str, str | bytes], ...] = ((STATUS_DETAILS_KEY, details),)
    if err.retry_delay is not None:
        # Envoy's transcoder passes response metadata on as HTTP headers: REST clients get
        # Retry-After (whole seconds, at least 1) beside the RetryInfo in the JSON body.
        metadata += (("retry-after", str(max(1, math.ceil(err.retry_delay)))),)
    await context.abort(err.code, client_message(err), trailing_metadata=metadata)


class ErrorInterceptor(WrappingInterceptor):
    """Maps ServiceError (and anything unexpected) to a google.rpc.Status with details, and a
    request that does not parse to INVALID_ARGUMENT."""

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        parse = handler.request_deserializer
        if parse is not None:
            parse = _parsed(parse, streaming=handler.request_streaming)
        return rewrap(handler, _wrap_unary, _wrap_stream, parse)


# Request metadata a server accepts: above Envoy's own limit on request headers (60 KiB).
MAX_METADATA_BYTES = 64 * 1024

NUL_IN_REQUEST = "a string in the request holds a NUL character (U+0000), which is not accepted"

_UNPARSABLE = (
    "the request does not parse: a string field that is not UTF-8, or bytes that are not the "
    "method's protobuf message"
)


class _Unparsable:
    """What a unary request that does not parse becomes: grpc.aio answers a deserializer's
    exception with UNKNOWN and the exception's text (a 500 through Envoy, e.g. for `%ff` in a
    REST path), so the request is handed on as this and its handler's wrapper refuses it."""


def _parsed(parse: Callable[[bytes], Any], *, streaming: bool) -> Callable[[bytes], Any]:
    def parsed(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            if streaming:  # raised while the handler reads the stream: mapped by its wrapper
                raise InvalidArgument(_UNPARSABLE) from None
            return _Unparsable()

    return parsed


def _wrap_unary(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: Ctx) -> Any:
        try:
            if isinstance(request, _Unparsable):
                raise InvalidArgument(_UNPARSABLE)
            return await fn(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return wrapper


def _wrap_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(request: Any, context: Ctx) -> AsyncIterator[Any]:
        try:
            if isinstance(request, _Unparsable):
                raise InvalidArgument(_UNPARSABLE)
            async for item in fn(request, context):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _abort(context, exc)

    return wrapper


# Calls that never reached a server (the replica died, the connection was refused) are retried
# on another one: gRPC's transparent retry covers that; this policy adds UNAVAILABLE answers.
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def channel_target(address: str) -> str:
    """A gRPC target for one address or several replicas: "host:port" stays as it is (a DNS name
    that resolves to every replica, e.g. a Kubernetes headless Service, is balanced per address);
    "h1:p1,h2:p2" becomes a static list, balanced round robin."""
    addrs = [a.strip() for a in address.split(",") if a.strip()]
    if len(addrs) <= 1:
        return address.strip()
    for addr in addrs:
        host, _, port = addr.rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{address!r}: list replicas as IPv4 host:port, or give one DNS name that "
                "resolves to all of them"
            ) from None
        if not port.isdigit():
            raise ValueError(f"{address!r}: {addr!r} has no port")
    return "ipv4:" + ",".join(addrs)


@contextlib.asynccontextmanager
async def channel(target: str) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure channel to a sibling service (the mesh runs on a trusted network), balanced
    round robin over its replicas (see `channel_target`)."""
    ch = grpc.aio.insecure_channel(
        channel_target(target),
        options=[
            ("grpc.max_receive_message_length", 80 * 1024 * 1024),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
            # A sibling that restarts is back within seconds: gRPC's default reconnect backoff
            # (1 s growing to 120 s) would keep failing calls fast for seconds after it is
            # SERVING again; retry the connection at most a second apart instead.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ],
        interceptors=channel_interceptors(),
    )
    try:
        yield ch
    finally:
        await ch.close()
