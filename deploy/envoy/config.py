"""Render the Envoy front-proxy config for pixmesh.

One listener serves REST/JSON (the gRPC-JSON transcoder for the public GatewayService) and native
gRPC (SDK, grpcurl: reflection and health pass straight through) on the same port, in front of the
gateway. Envoy starts every trace (OpenTelemetry, OTLP/gRPC) and hands `traceparent` to the gateway.
With several gateway replicas (the local cluster mode), Envoy balances over them, takes one out on a
failed gRPC health check or on connect failures (outlier detection), and retries a request that
never reached a gateway, or that one refused as UNAVAILABLE, on another.

The config is built as plain dicts and written as JSON, which Envoy reads as YAML too; no PyYAML.

    python -m deploy.envoy.config --out .pixmesh/envoy.json --gateway-port 50051
    python -m deploy.envoy.config --out envoy.json --gateway-port 50051 --gateway-port 50061
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploy.envoy import console
from pixmesh.gateway.v1 import gateway_pb2

Json = dict[str, Any]

GATEWAY_SERVICE = "pixmesh.gateway.v1.GatewayService"
DOMAIN = "pixmesh.dev"  # ErrorInfo.domain, as the services send it (services/runtime/errors.py)
DEFAULT_DESCRIPTOR = str(Path(__file__).with_name("pixmesh.pb"))
# An HttpBody download is one gRPC message; the services cap messages at 80 MiB (max_message_bytes).
DEFAULT_MAX_RESPONSE_BYTES = 80 * 1024 * 1024

# Routes are matched on the gRPC path: the transcoder rewrites `:path` and clears the route cache,
# so REST and native gRPC calls of one method share one route (and its timeouts).
_STREAMING_PREFIXES = (
    f"/{GATEWAY_SERVICE}/WatchJob",  # server stream that lasts as long as the job
    f"/{GATEWAY_SERVICE}/WatchBatch",  # as long as the batch
    # Zip archives: streamed HttpBody chunks, as long as the download takes.
    f"/{GATEWAY_SERVICE}/DownloadJobArchive",
    f"/{GATEWAY_SERVICE}/DownloadBatchArchive",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.",  # grpcurl keeps the bidi stream open while it resolves symbols
)
_UPLOAD_PREFIX = f"/{GATEWAY_SERVICE}/UploadImage"  # UploadImage and UploadImageRaw
UNARY_TIMEOUT = "60s"
UPLOAD_TIMEOUT = "600s"  # 64 MiB over a slow link
STREAM_IDLE_TIMEOUT = "3600s"

# Envoy's own replies (unknown path, body too large, ...) use google.rpc.Status JSON like the
# transcoded errors, so REST clients parse one error shape. HTTP status -> gRPC code.
_LOCAL_REPLY_CODES = {400: 3, 404: 5, 413: 8, 429: 8, 431: 8, 502: 14, 503: 14, 504: 4}
# Replies whose Envoy text is about Envoy ("transcoder's internal buffer size", "upstream connect
# error ... reset reason") get a fixed message and an ErrorInfo reason instead: no internal
# message reaches a client, and a body over a limit says so with a reason on every route.
_LOCAL_REPLY_REASONS = {
    413: (
        "REQUEST_TOO_LARGE",
        "the request body is over this endpoint's size limit; upload large images with"
        " CreateUploadUrl (POST /v1/images:uploadUrl)",
    ),
    502: ("UPSTREAM_UNAVAILABLE", "the service is temporarily unavailable; retry shortly"),
    503: ("UPSTREAM_UNAVAILABLE", "the service is temporarily unavailable; retry shortly"),
    504: ("UPSTREAM_TIMEOUT", "the service did not answer in time"),
}

_H2_OPTIONS: Json = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def _address(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cluster(name: str, host: str, ports: Sequence[int], **extra: Any) -> Json:
    """An HTTP/2 cluster of `host` on each port; DNS-resolved when `host` is a name (compose,
    k8s)."""
    endpoints = [{"endpoint": {"address": _address(host, port)}} for port in ports]
    return {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": _H2_OPTIONS,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
        **extra,
    }


def _gateway_cluster(host: str, ports: Sequence[int]) -> Json:
    if len(ports) == 1:
        # With one host, an unhealthy verdict puts the cluster in panic mode and Envoy still
        # routes to it; the check's value is the admin/stats view and readiness.
        health_check = {
            "timeout": "1s",
            "interval": "5s",
            # Default is 60 s: too slow to notice the gateway came up when no requests flow yet.
            "no_traffic_interval": "5s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": GATEWAY_SERVICE},
        }
        return _cluster("gateway", host, ports, health_checks=[health_check])
    # Replicas: a dead or draining gateway (health NOT_SERVING) leaves the rotation within about
    # two seconds, and one that refuses connections sooner, by outlier detection on local-origin
    # failures only: a gateway answering UNAVAILABLE because of *its* upstream stays in.
    health_check = {
        "timeout": "1s",
        "interval": "1s",
        "no_traffic_interval": "1s",
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
        "grpc_health_check": {"service_name": GATEWAY_SERVICE},
    }
    outlier_detection = {
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 2,
        "enforcing_consecutive_local_origin_failure": 100,
        "enforcing_consecutive_5xx": 0,
        "enforcing_consecutive_gateway_failure": 0,
        "enforcing_success_rate": 0,
        "interval": "1s",
        "base_ejection_time": "5s",
        "max_ejection_percent": 50,  # never eject every gateway: better to try than to 503
    }
    return _cluster(
        "gateway",
        host,
        ports,
        health_checks=[health_check],
        outlier_detection=outlier_detection,
    )


def _retry_policy() -> Json:
    """Retry on another gateway what did not reach one (connect failure, refused stream, reset
    before any response) or what one refused with UNAVAILABLE (e.g. while draining). Every
    gateway method is safe to repeat: CreateJob by its idempotency key, uploads by content.
    Envoy retries a request only before the response started, and only while its body fits the
    retry buffer, so streams that already flow are never replayed."""
    return {
        "retry_on": "connect-failure,refused-stream,reset,unavailable",
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3"
                    ".PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
        "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.5s"},
    }


def _transcoder(descriptor_path: str, max_request_bytes: int, max_response_bytes: int) -> Json:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder"
            ".v3.GrpcJsonTranscoder",
            "proto_descriptor": descriptor_path,
            "services": [GATEWAY_SERVICE],
            # Errors become google.rpc.Status JSON with the mapped HTTP status (NOT_FOUND -> 404).
            "convert_grpc_status": True,
            "print_options": {
                "always_print_primitive_fields": True,
                # snake_case in responses, the same names as in requests and in the protos.
                "preserve_proto_field_names": True,
                # Server streams (WatchJob) as NDJSON: one JSON object per line.
                "stream_newline_delimited": True,
            },
            # Unknown REST paths are 404 here instead of reaching the gateway as HTTP/1 garbage;
            # native gRPC requests (reflection, health) are never transcoded, so they still pass.
            "request_validation_options": {
                "reject_unknown_method": True,
                "reject_binding_body_field_collisions": True,
            },
            # Cache busters and tracking params must not break a GET; known params such as
            # ?filename= on the raw upload still bind to their request fields.
            "ignore_unknown_query_parameters": True,
            "query_param_unescape_plus": True,  # ?filename=my+photo.jpg -> "my photo.jpg"
            "case_insensitive_enum_parsing": True,  # ?state=running
            # Transcoded bodies are buffered whole; above this the caller gets 413.
            "max_request_body_size": max_request_bytes,
            "max_response_body_size": max_response_bytes,
        },
    }


def _route(name: str, prefix: str, *, buffered: bool = True, **action: Any) -> Json:
    route: Json = {
        "name": name,
        "match": {"prefix": prefix},
        "route": {"cluster": "gateway", **action},
    }
    if not buffered:  # streams flow through; the buffer filter would hold them until the end
        route["typed_per_filter_config"] = {
            "envoy.filters.http.buffer": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                "disabled": True,
            }
        }
    return route


def _buffer_filter(max_request_bytes: int) -> Json:
    """Every unary request body is capped before the transcoder: the transcoder itself caps only
    HttpBody bodies, so a JSON body over the limit went on to the gateway (and one over its gRPC
    message limit came back 429 "Received message larger than max"). Over it: 413 with a JSON
    reason (REQUEST_TOO_LARGE). Streaming routes opt out per route."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": max_request_bytes,
        },
    }


def _routes(console_dir: str | None) -> list[Json]:
    # The web console's page and files first: Envoy answers them itself (deploy/envoy/console.py).
    pages = console.routes(console_dir) if console_dir else []
    streams = [
        _route(
            f"stream:{p.strip('/')}",
            p,
            buffered=False,
            timeout="0s",
            idle_timeout=STREAM_IDLE_TIMEOUT,
        )
        for p in _STREAMING_PREFIXES
    ]
    # Native gRPC uploads stream in chunks (the gateway enforces its own size limit as they come).
    upload = _route("upload", _UPLOAD_PREFIX, buffered=False, timeout=UPLOAD_TIMEOUT)
    # A gRPC client's own deadline (grpc-timeout) wins over the 60 s default; REST has none.
    unary = _route(
        "default", "/", timeout=UNARY_TIMEOUT, max_stream_duration={"grpc_timeout_header_max": "0s"}
    )
    return [*pages, *streams, upload, unary]


def _tracing(service_name: str, sampling_percent: float) -> Json:
    return {
        # The head-sampling decision for a request that brings no traceparent; the services
        # follow it (parent-based). A client's sampled traceparent is always traced.
        "random_sampling": {"value": sampling_percent},
        # A client span per upstream call: the parent the gateway's server span continues from.
        "spawn_upstream_span": True,
        # Span names are evaluated after transcoding, so they are the gRPC method, never a REST
        # path full of ids (the default is a constant "ingress").
        "operation": "%REQ(:PATH)%",
        "upstream_operation": "upstream %REQ(:PATH)%",
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": "otlp"}, "timeout": "2s"},
                "service_name": service_name,
            },
        },
    }


def _local_reply_mapper(http_status: int, op: str, grpc_code: int) -> Json:
    # Native gRPC callers get Envoy's usual trailers-only reply; everyone else (untranscoded REST,
    # and transcoded REST, whose content-type now says gRPC but whose path was rewritten) gets JSON.
    native_grpc = {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
    not_grpc = {
        "header": {**native_grpc, "invert_match": True, "treat_missing_header_as_empty": True}
    }
    transcoded = {"header": {"name": "x-envoy-original-path", "present_match": True}}
    status = {
        "comparison": {
            "op": op,
            "value": {
                "default_value": http_status,
                "runtime_key": f"pixmesh.reply_{op}_{http_status}",
            },
        }
    }
    rest = {"or_filter": {"filters": [{"header_filter": not_grpc}, {"header_filter": transcoded}]}}
    body: Json = {"code": grpc_code, "message": "%LOCAL_REPLY_BODY%"}
    if op == "EQ" and http_status in _LOCAL_REPLY_REASONS:
        reason, message = _LOCAL_REPLY_REASONS[http_status]
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}
        body = {"code": grpc_code, "message": message, "details": [{**info, "domain": DOMAIN}]}
    return {
        "filter": {"and_filter": {"filters": [{"status_code_filter": status}, rest]}},
        "body_format_override": {"json_format": body, "content_type": "application/json"},
    }


def _access_log() -> Json:
    fields = {
        "time": "%START_TIME%",
        "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "route": "%ROUTE_NAME%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "trace_id": "%TRACE_ID%",
    }
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fields},
        },
    }


def _gateway_methods() -> list[str]:
    service = gateway_pb2.DESCRIPTOR.services_by_name[GATEWAY_SERVICE.rsplit(".", 1)[1]]
    return [m.name for m in service.methods]


def _cors_policy(origins: Sequence[str]) -> Json:
    """Browsers on these origins may call the REST API (the console itself is same-origin and
    needs none). Preflights are answered by Envoy, before the transcoder sees an OPTIONS."""
    return {
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": o} for o in origins],
            "allow_methods": "GET, POST, OPTIONS",
            "allow_headers": "authorization, content-type, idempotency-key, x-request-id",
            "expose_headers": "content-disposition, grpc-status, grpc-message",
            "max_age": "600",
        }
    }


def _cors_filter() -> Json:
    return {
        "name": "envoy.filters.http.cors",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
    }


def _connection_manager(
    transcoder: Json,
    replicas: int,
    console_dir: str | None = None,
    cors_origins: Sequence[str] = (),
    max_request_bytes: int = 64 * 1024 * 1024,
    trace_sampling_percent: float = 100.0,
) -> Json:
    virtual_host: Json = {"name": "pixmesh", "domains": ["*"], "routes": _routes(console_dir)}
    if replicas > 1:
        virtual_host["retry_policy"] = _retry_policy()
    if cors_origins:
        virtual_host["typed_per_filter_config"] = _cors_policy(cors_origins)
    return {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",  # HTTP/1.1 for curl, h2c prior knowledge for gRPC, same port
        # HTTP/1.0 clients (ab, curl -0, old proxies) too: Envoy answered them 426 "Upgrade
        # Required", a JSON error with code UNKNOWN. A 1.0 request without a Host gets this one.
        "http_protocol_options": {"accept_http_10": True, "default_host_for_http_10": "pixmesh"},
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "access_log": [_access_log()],
        "tracing": _tracing("pixmesh-envoy", trace_sampling_percent),
        "local_reply_config": {
            "mappers": [
                *(_local_reply_mapper(s, "EQ", c) for s, c in _LOCAL_REPLY_CODES.items()),
                _local_reply_mapper(400, "GE", 2),  # anything else: UNKNOWN
            ]
        },
        "route_config": {
            "name": "pixmesh",
            "virtual_hosts": [virtual_host],
            # The console's files are direct responses (Envoy's default cap is 4 KiB).
            "max_direct_response_body_size_bytes": console.MAX_ASSET_BYTES,
        },
        "http_filters": [
            *([_cors_filter()] if cors_origins else []),
            _buffer_filter(max_request_bytes),
            transcoder,
            # After the transcoder on decode (sees gRPC paths) and before it on encode (sees the
            # gRPC status): per-method request/status counters for REST and gRPC alike.
            {
                "name": "envoy.filters.http.grpc_stats",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3"
                    ".FilterConfig",
                    # Named methods only: per-path stats for any path a client sends would let
                    # callers grow Envoy's stats without bound.
                    "individual_method_stats_allowlist": {
                        "services": [{"name": GATEWAY_SERVICE, "method_names": _gateway_methods()}]
                    },
                    "enable_upstream_stats": True,
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }


def render_config(
    *,
    listen_port: int,
    admin_port: int,
    gateway_ports: Sequence[int],
    descriptor_path: str,
    otlp_port: int,
    max_request_bytes: int = 64 * 1024 * 1024,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    listen_host: str = "127.0.0.1",
    admin_host: str = "127.0.0.1",
    gateway_host: str = "127.0.0.1",
    otlp_host: str = "127.0.0.1",
    console_dir: str | None = str(console.CONSOLE_SOURCE),
    cors_origins: Sequence[str] = (),
    trace_sampling_percent: float = 100.0,
) -> str:
    """Return the Envoy bootstrap as JSON text (valid YAML too).

    Hosts default to loopback for the embedded stack; compose/k8s pass service names, which turns
    the clusters into DNS-resolved ones. `gateway_ports` lists the gateway replicas (on
    `gateway_host`): one for a single node, several for the local cluster mode.
    `console_dir` is where Envoy reads the web console's files (None: no console);
    `cors_origins` lists the other origins whose pages may call the API (none by default).
    `trace_sampling_percent` is the share of requests Envoy starts a sampled trace for (every
    one by default: the local stack, compose and the tests; production overlays lower it).
    """
    if not gateway_ports:
        raise ValueError("gateway_ports: at least one gateway")
    listener = {
        "name": "pixmesh",
        "address": _address(listen_host, listen_port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": _connection_manager(
                            _transcoder(descriptor_path, max_request_bytes, max_response_bytes),
                            len(gateway_ports),
                            console_dir,
                            cors_origins,
                            max_request_bytes,
                            trace_sampling_percent,
                        ),
                    }
                ]
            }
        ],
    }
    bootstrap = {
        "node": {"id": "pixmesh-envoy", "cluster": "pixmesh"},
        "admin": {"address": _address(admin_host, admin_port)},
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                _gateway_cluster(gateway_host, gateway_ports),
                _cluster("otlp", otlp_host, [otlp_port]),
            ],
        },
        # Flush spans every second (default 5 s) so a dev sees a trace right after the request.
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {"tracing.opentelemetry.flush_interval_ms": 1000},
                }
            ]
        },
    }
    return json.dumps(bootstrap, indent=2) + "\n"


def envoy_command(config_path: str | Path, envoy: str = "envoy") -> list[str]:
    """The command line to run Envoy on a rendered config, with the flags that matter for dev."""
    return [
        envoy,
        "-c",
        str(config_path),
        # No hot restart: no shared-memory base id to collide with another Envoy on the machine.
        "--disable-hot-restart",
        # Access logs are flushed every 10 s by default (a command-line flag, not a config field).
        "--file-flush-interval-msec",
        "500",
        "--log-level",
        "warn",
    ]


def write_config(path: str | Path, **kwargs: Any) -> Path:
    """Render with `kwargs` (see render_config) and write to `path`; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_config(**kwargs))
    return out


# deploy/compose/envoy.json is render_config(**COMPOSE); a test keeps the committed file in sync.
COMPOSE: dict[str, Any] = {
    "listen_port": 8080,
    "admin_port": 9901,
    "gateway_ports": [50051],
    "otlp_port": 4317,
    "descriptor_path": "/etc/envoy/pixmesh.pb",
    "listen_host": "0.0.0.0",
    "admin_host": "0.0.0.0",
    "gateway_host": "gateway",
    "otlp_host": "tempo",
    "console_dir": "/etc/envoy/console",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.envoy.config", description=__doc__)
    p.add_argument("--out", required=True, help="file to write (.json or .yaml)")
    p.add_argument("--listen-port", type=int, default=8080)
    p.add_argument("--admin-port", type=int, default=9901)
    p.add_argument(
        "--gateway-port",
        type=int,
        action="append",
        help="a gateway replica's port; repeat for several (default 50051)",
    )
    p.add_argument("--otlp-port", type=int, default=4317)
    p.add_argument("--descriptor", default=DEFAULT_DESCRIPTOR, help="buf-built descriptor set")
    p.add_argument("--max-request-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--max-response-bytes", type=int, default=DEFAULT_MAX_RESPONSE_BYTES)
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--admin-host", default="127.0.0.1")
    p.add_argument("--gateway-host", default="127.0.0.1")
    p.add_argument("--otlp-host", default="127.0.0.1")
    p.add_argument("--console-dir", default=str(console.CONSOLE_SOURCE))
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="an origin (https://app.example.com) whose pages may call the API; repeat",
    )
    p.add_argument(
        "--compose", action="store_true", help="the docker-compose config; ignores the rest"
    )
    a = p.parse_args(argv)
    if a.compose:
        write_config(a.out, **COMPOSE)
        return 0
    write_config(
        a.out,
        listen_port=a.listen_port,
        admin_port=a.admin_port,
        gateway_ports=a.gateway_port or [50051],
        descriptor_path=a.descriptor,
        otlp_port=a.otlp_port,
        max_request_bytes=a.max_request_bytes,
        max_response_bytes=a.max_response_bytes,
        listen_host=a.listen_host,
        admin_host=a.admin_host,
        gateway_host=a.gateway_host,
        otlp_host=a.otlp_host,
        console_dir=a.console_dir,
        cors_origins=a.cors_origin,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
