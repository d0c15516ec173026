"""The rendered Envoy config, run for real: REST transcoding, gRPC pass-through, limits, tracing.

A fake GatewayService (test-only) stands in for the gateway; a fake OTLP collector receives
Envoy's spans. Nothing here depends on the other pixmesh services.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from google.api import httpbody_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from deploy.envoy import console
from deploy.envoy.config import COMPOSE, GATEWAY_SERVICE, envoy_command, render_config
from pixmesh.common.v1 import image_pb2, job_pb2
from pixmesh.gateway.v1 import gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
ENVOY = REPO / ".venv" / "bin" / "envoy"
DESCRIPTOR = REPO / "deploy" / "envoy" / "pixmesh.pb"
LIMIT = 4 * 1024 * 1024  # above Envoy's 1 MiB default buffer, so the limit really is ours
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-[0-9a-f]{16}-0[01]$")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


@dataclass
class Seen:
    """What the fake gateway received, per method."""

    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    uploads: list[gateway_pb2.UploadImageRawRequest] = field(default_factory=list)


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def _record(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.seen.metadata[method] = {k: str(v) for k, v in context.invocation_metadata() or ()}

    async def UploadImageRaw(
        self,
        request: gateway_pb2.UploadImageRawRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.UploadImageRawResponse:
        self._record("UploadImageRaw", context)
        self.seen.uploads.append(request)
        image = image_pb2.Image(
            image_id="img_" + "0" * 32,
            size_bytes=len(request.body.data),
            sha256=hashlib.sha256(request.body.data).hexdigest(),
            content_type=request.body.content_type,
            filename=request.filename,
        )
        return gateway_pb2.UploadImageRawResponse(image=image)

    async def GetJob(
        self, request: gateway_pb2.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetJobResponse:
        self._record("GetJob", context)
        if request.job_id == "job_missing":
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason="JOB_NOT_FOUND", domain="pixmesh"))
            status = status_pb2.Status(
                code=code_pb2.NOT_FOUND, message="job not found", details=[info]
            )
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                status.message,
                trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
            )
        job = job_pb2.Job(job_id=request.job_id, state=job_pb2.Job.PENDING)
        return gateway_pb2.GetJobResponse(job=job)

    async def WatchJob(
        self, request: gateway_pb2.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[gateway_pb2.WatchJobResponse]:
        self._record("WatchJob", context)
        for state, progress in ((job_pb2.Job.PENDING, 0.0), (job_pb2.Job.RUNNING, 0.5)):
            yield gateway_pb2.WatchJobResponse(
                job=job_pb2.Job(job_id=request.job_id, state=state, progress=progress)
            )
            await asyncio.sleep(0.05)  # separate HTTP/2 frames, as real updates would be
        yield gateway_pb2.WatchJobResponse(
            job=job_pb2.Job(job_id=request.job_id, state=job_pb2.Job.SUCCEEDED, progress=1.0)
        )

    async def DownloadOutput(
        self,
        request: gateway_pb2.DownloadOutputRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.DownloadOutputResponse:
        self._record("DownloadOutput", context)
        return gateway_pb2.DownloadOutputResponse(
            body=httpbody_pb2.HttpBody(content_type="image/png", data=PNG)
        )


class FakeCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans_by_service(self) -> Iterator[tuple[str, Any]]:
        for req in self.requests:
            for rs in req.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        yield attrs.get("service.name", ""), span


@dataclass
class Stack:
    url: str
    grpc_target: str
    admin_url: str
    seen: Seen
    collector: FakeCollector
    access_log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_ready(admin_url: str, proc: asyncio.subprocess.Process) -> None:
    """Until the listener is up and the gRPC health check has marked the gateway healthy."""
    async with httpx.AsyncClient(base_url=admin_url) as admin:
        for _ in range(200):
            assert proc.returncode is None, "envoy exited"
            try:
                clusters = (await admin.get("/clusters")).text
                ready = (await admin.get("/ready")).status_code == 200
            except httpx.TransportError:
                ready, clusters = False, ""
            if ready and re.search(r"^gateway::.*::health_flags::healthy$", clusters, re.M):
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"envoy not ready; clusters:\n{clusters}")


def test_rendered_configs_pass_envoy_validation(tmp_path: Path) -> None:
    configs = {
        "dev": render_config(
            listen_port=8080,
            admin_port=9901,
            gateway_ports=[50051],
            descriptor_path=str(DESCRIPTOR),
            otlp_port=4317,
        ),
        # The compose file names the descriptor inside the container; validate with ours.
        "compose": render_config(
            **{
                **COMPOSE,
                "descriptor_path": str(DESCRIPTOR),
                "console_dir": str(console.CONSOLE_SOURCE),
            }
        ),
        "cluster": render_config(
            listen_port=8080,
            admin_port=9901,
            gateway_ports=[50051, 50061],
            descriptor_path=str(DESCRIPTOR),
            otlp_port=4317,
            cors_origins=["https://app.example.com"],
        ),
    }
    for name, text in configs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        done = subprocess.run(
            [str(ENVOY), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"


def test_only_streaming_routes_have_no_request_timeout() -> None:
    config = json.loads(
        render_config(
            listen_port=1, admin_port=2, gateway_ports=[3], descriptor_path="x.pb", otlp_port=4
        )
    )
    (listener,) = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    untimed = {
        r["match"]["prefix"] for r in routes if "route" in r and r["route"]["timeout"] == "0s"
    }
    assert untimed == {
        f"/{GATEWAY_SERVICE}/WatchJob",
        f"/{GATEWAY_SERVICE}/WatchBatch",
        f"/{GATEWAY_SERVICE}/DownloadJobArchive",
        f"/{GATEWAY_SERVICE}/DownloadBatchArchive",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.",
    }
    assert routes[-1]["match"]["prefix"] == "/"  # the catch-all comes last


def _gateway_cluster_and_vhost(ports: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = json.loads(
        render_config(
            listen_port=1, admin_port=2, gateway_ports=ports, descriptor_path="x.pb", otlp_port=4
        )
    )
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "gateway"]
    (listener,) = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    return cluster, vhost


def test_gateway_replicas_are_balanced_health_checked_ejected_and_retried() -> None:
    cluster, vhost = _gateway_cluster_and_vhost([50051, 50061])
    (locality,) = cluster["load_assignment"]["endpoints"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"] for e in locality["lb_endpoints"]
    ]
    assert ports == [50051, 50061]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": GATEWAY_SERVICE}
    assert check["interval"] == check["no_traffic_interval"] == "1s"
    outlier = cluster["outlier_detection"]
    assert outlier["split_external_local_origin_errors"] is True
    assert outlier["consecutive_local_origin_failure"] == 2
    # A gateway answering UNAVAILABLE for its own upstream (jobs) is not ejected for it.
    assert (
        outlier["enforcing_consecutive_5xx"]
        == outlier["enforcing_consecutive_gateway_failure"]
        == 0
    )
    assert outlier["max_ejection_percent"] == 50
    retry = vhost["retry_policy"]
    assert set(retry["retry_on"].split(",")) == {
        "connect-failure",
        "refused-stream",
        "reset",
        "unavailable",
    }
    assert retry["num_retries"] >= 1
    (predicate,) = retry["retry_host_predicate"]
    assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"


def test_one_gateway_keeps_the_single_node_config() -> None:
    cluster, vhost = _gateway_cluster_and_vhost([50051])
    assert "outlier_detection" not in cluster and "retry_policy" not in vhost
    assert cluster["health_checks"][0]["interval"] == "5s"
    with pytest.raises(ValueError, match="at least one"):
        _gateway_cluster_and_vhost([])


def test_committed_compose_config_is_current() -> None:
    committed = (REPO / "deploy" / "compose" / "envoy.json").read_text()
    assert committed == render_config(**COMPOSE), "run: python -m deploy.envoy.config --compose"


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    assert ENVOY.exists() and DESCRIPTOR.exists()
    seen, collector = Seen(), FakeCollector()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 2 * LIMIT)])
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(FakeGateway(seen), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [GATEWAY_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    gateway_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set(GATEWAY_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    otlp_port = otlp.add_insecure_port("127.0.0.1:0")
    await otlp.start()

    tmp = tmp_path_factory.mktemp("envoy")
    listen_port, admin_port = _free_port(), _free_port()
    config = tmp / "envoy.json"
    config.write_text(
        render_config(
            listen_port=listen_port,
            admin_port=admin_port,
            gateway_ports=[gateway_port],
            descriptor_path=str(DESCRIPTOR),
            otlp_port=otlp_port,
            max_request_bytes=LIMIT,
        )
    )
    access_log = tmp / "stdout.log"
    with access_log.open("wb") as out, (tmp / "stderr.log").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *envoy_command(config, envoy=str(ENVOY)), stdout=out, stderr=err
        )
    admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        await _wait_ready(admin_url, proc)
        yield Stack(
            url=f"http://127.0.0.1:{listen_port}",
            grpc_target=f"127.0.0.1:{listen_port}",
            admin_url=admin_url,
            seen=seen,
            collector=collector,
            access_log=access_log,
        )
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=5)
        except TimeoutError:
            proc.kill()
        await server.stop(None)
        await otlp.stop(None)


@pytest_asyncio.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as client:
        yield client


@pytest.mark.integration
async def test_gateway_cluster_is_checked_with_grpc_health(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.admin_url) as admin:
        stats = (
            await admin.get("/stats", params={"filter": r"^cluster\.gateway\.health_check\."})
        ).text
    counters = dict(line.split(": ") for line in stats.splitlines())
    assert int(counters["cluster.gateway.health_check.success"]) >= 1
    assert int(counters["cluster.gateway.health_check.failure"]) == 0


@pytest.mark.integration
async def test_raw_upload_arrives_whole_with_type_filename_and_auth(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    body = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB: several buffer chunks
    resp = await http.post(
        "/v1/images",
        params={"filename": "my photo.jpg"},
        content=body,
        headers={"content-type": "image/jpeg", "authorization": "Bearer pk_test"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    image = resp.json()["image"]
    assert image["size_bytes"] == str(len(body))  # uint64 is a JSON string
    assert image["sha256"] == hashlib.sha256(body).hexdigest()
    assert image["content_type"] == "image/jpeg"
    assert image["filename"] == "my photo.jpg"
    md = stack.seen.metadata["UploadImageRaw"]
    assert md["authorization"] == "Bearer pk_test"
    assert TRACEPARENT.match(md["traceparent"])


@pytest.mark.integration
async def test_upload_over_limit_is_413(stack: Stack, http: httpx.AsyncClient) -> None:
    uploads_before = len(stack.seen.uploads)
    resp = await http.post(
        "/v1/images", content=b"\0" * (LIMIT + 1), headers={"content-type": "image/png"}
    )
    assert resp.status_code == 413
    assert resp.json()["code"] == code_pb2.RESOURCE_EXHAUSTED
    assert len(stack.seen.uploads) == uploads_before  # never reached the gateway


@pytest.mark.integration
async def test_an_http_1_0_client_is_served(stack: Stack) -> None:
    """`curl -0`, ab and old proxies speak HTTP/1.0: Envoy answered 426 Upgrade Required (a
    JSON error with code UNKNOWN) before the request reached the transcoder."""
    host, port = stack.url.removeprefix("http://").split(":")
    body = b"\x89PNG\r\n\x1a\n" + bytes(64)
    for host_header in (b"Host: pixmesh\r\n", b""):  # with and without a Host
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/images?filename=old.png HTTP/1.0\r\n"
            + host_header
            + b"Content-Type: image/png\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 10)  # 1.0: the server closes
        writer.close()
        head, _, payload = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(payload)["image"]["filename"] == "old.png"


@pytest.mark.integration
async def test_get_job_prints_primitive_fields(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/jobs/job_1")
    assert resp.status_code == 200
    job = resp.json()["job"]
    assert job["job_id"] == "job_1"
    assert job["state"] == "PENDING"
    # Zero values are printed, so REST clients never have to guess a default.
    assert job["progress"] == 0
    assert job["idempotency_key"] == ""
    assert job["outputs"] == []


@pytest.mark.integration
async def test_upstream_not_found_is_404_json_with_details(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/jobs/job_missing")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()
    assert err["code"] == code_pb2.NOT_FOUND
    assert err["message"] == "job not found"
    assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert err["details"][0]["reason"] == "JOB_NOT_FOUND"


@pytest.mark.integration
async def test_unknown_path_is_404_json(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.json()["code"] == code_pb2.NOT_FOUND


@pytest.mark.integration
async def test_watch_job_streams_ndjson_on_the_streaming_route(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    async with http.stream("GET", "/v1/jobs/job_w:watch") as resp:
        assert resp.status_code == 200
        lines = [json.loads(line) async for line in resp.aiter_lines() if line.strip()]
    assert [m["job"]["state"] for m in lines] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert lines[1]["job"]["progress"] == 0.5
    # Routed (after transcoding) to the route without a request timeout.
    entry = await _access_log_entry(stack.access_log, "/v1/jobs/job_w:watch")
    assert entry["route"] == f"stream:{GATEWAY_SERVICE}/WatchJob"


@pytest.mark.integration
async def test_download_returns_raw_bytes_with_upstream_type(http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/jobs/job_1/outputs/0")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    assert resp.content == PNG


@pytest.mark.integration
async def test_native_grpc_reflection_and_health_share_the_listener(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply = await stub.GetJob(
            gateway_pb2.GetJobRequest(job_id="job_g"),
            metadata=(("authorization", "Bearer pk_grpc"),),
            timeout=5,
        )
        assert reply.job.job_id == "job_g"
        assert stack.seen.metadata["GetJob"]["authorization"] == "Bearer pk_grpc"

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetJob(gateway_pb2.GetJobRequest(job_id="job_missing"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        check = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=GATEWAY_SERVICE), timeout=5
        )
        assert check.status == health_pb2.HealthCheckResponse.SERVING

        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await call.read()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        names = {s.name for s in listed.list_services_response.service}
        assert {GATEWAY_SERVICE, health.SERVICE_NAME} <= names


@pytest.mark.integration
async def test_envoy_exports_its_span_in_the_trace_the_gateway_sees(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    resp = await http.get("/v1/jobs/job_traced")
    assert resp.status_code == 200
    match = TRACEPARENT.match(stack.seen.metadata["GetJob"]["traceparent"])
    assert match
    trace_id = bytes.fromhex(match.group(1))
    method = f"/{GATEWAY_SERVICE}/GetJob"
    for _ in range(60):  # spans are flushed every second
        spans = {
            s.name: (svc, s)
            for svc, s in stack.collector.spans_by_service()
            if s.trace_id == trace_id
        }
        if len(spans) == 2:
            break
        await asyncio.sleep(0.1)
    # Named by gRPC method (not the REST path with its ids), the server span is the trace root
    # and the client span to the gateway is the parent the gateway continues from.
    assert set(spans) == {method, f"upstream {method}"}
    (svc, root), (svc2, client) = spans[method], spans[f"upstream {method}"]
    assert svc == svc2 == "pixmesh-envoy"
    assert not root.parent_span_id
    assert client.parent_span_id == root.span_id
    assert match.group(0).split("-")[2] == client.span_id.hex()


async def _access_log_entry(path: Path, original_path: str) -> dict[str, Any]:
    for _ in range(60):  # the stdout logger flushes on its own schedule
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("path") == original_path:
                    return entry
        await asyncio.sleep(0.1)
    raise AssertionError(f"no access log entry for {original_path}")


class CountingGateway(FakeGateway):
    def __init__(self) -> None:
        super().__init__(Seen())
        self.calls = 0

    async def GetJob(
        self, request: gateway_pb2.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetJobResponse:
        self.calls += 1
        return await super().GetJob(request, context)


async def _gateway(servicer: CountingGateway) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set(GATEWAY_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def test_two_gateways_share_the_load_and_a_dead_one_fails_no_request(
    tmp_path: Path,
) -> None:
    """The cluster mode's front: round robin over both gateways; the moment one dies (before
    any health check noticed), requests that hit it are retried on the other."""
    one, two = CountingGateway(), CountingGateway()
    (server_one, port_one), (server_two, port_two) = await _gateway(one), await _gateway(two)
    listen_port, admin_port = _free_port(), _free_port()
    config = tmp_path / "envoy.json"
    config.write_text(
        render_config(
            listen_port=listen_port,
            admin_port=admin_port,
            gateway_ports=[port_one, port_two],
            descriptor_path=str(DESCRIPTOR),
            otlp_port=_free_port(),  # nobody listens: spans are dropped, requests unaffected
        )
    )
    with (tmp_path / "envoy.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *envoy_command(config, envoy=str(ENVOY)), stdout=log, stderr=log
        )
    admin_url = f"http://127.0.0.1:{admin_port}"
    try:
        async with httpx.AsyncClient(base_url=admin_url, timeout=2) as admin:
            clusters, healthy = "", []
            for _ in range(200):  # both hosts pass their first gRPC health check
                assert proc.returncode is None, (tmp_path / "envoy.log").read_text()
                try:
                    clusters = (await admin.get("/clusters")).text
                except httpx.TransportError:
                    clusters = ""
                healthy = re.findall(r"^gateway::.*::health_flags::healthy$", clusters, re.M)
                if len(healthy) == 2:
                    break
                await asyncio.sleep(0.05)
            assert len(healthy) == 2, clusters
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listen_port}") as rest:
            for i in range(20):
                assert (await rest.get(f"/v1/jobs/job_{i}")).status_code == 200
            assert one.calls > 0 and two.calls > 0 and one.calls + two.calls == 20
            await server_one.stop(0)
            before = two.calls
            replies = [(await rest.get(f"/v1/jobs/job_{i}")).status_code for i in range(20)]
            assert replies == [200] * 20
            assert two.calls == before + 20
    finally:
        proc.terminate()
        await proc.wait()
        await server_one.stop(0)
        await server_two.stop(0)
