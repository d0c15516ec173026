"""Service-to-service trust against the real stack: every internal service refuses a call
without the mesh's service token (or with a forged or expired one), health and reflection stay
open, the gateway's public API takes API keys, and inference's model management needs an
operator's admin token."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local import Stack
from pixmesh.inference.v1 import inference_pb2, inference_pb2_grpc
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from pixmesh.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from services.runtime import trust

pytestmark = pytest.mark.integration

HEADER = trust.HEADER


@pytest.fixture(scope="module")
def channels(stack: Stack) -> Iterator[dict[str, grpc.Channel]]:
    chans = {
        n: grpc.insecure_channel(stack.service_addr(n)) for n in ("jobs", "inference", "metadata")
    }
    yield chans
    for c in chans.values():
        c.close()


def _code(call: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_internal_services_refuse_callers_without_the_mesh_token(
    stack: Stack, channels: dict[str, grpc.Channel]
) -> None:
    jobs = jobs_pb2_grpc.JobsServiceStub(channels["jobs"])
    # Another tenant's jobs, asked for with a tenant id of the caller's choosing: refused.
    listing = jobs_pb2.ListJobsRequest(tenant_id="dev", page_size=1)
    with pytest.raises(grpc.RpcError) as info:
        jobs.ListJobs(listing, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "SERVICE_TOKEN_MISSING" in str(info.value.trailing_metadata())
    forged = jwt.encode({"sub": "x", "aud": trust.AUDIENCE, "exp": int(time.time()) + 60}, "guess")
    expired = jwt.encode(
        {"sub": "x", "aud": trust.AUDIENCE, "exp": int(time.time()) - 5},
        stack.service_token_secret(),
    )
    for token in (forged, expired, "not-a-token"):
        assert _code(jobs.ListJobs, listing, metadata=((HEADER, token),), timeout=10) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    metadata = metadata_pb2_grpc.MetadataServiceStub(channels["metadata"])
    assert (
        _code(metadata.ListOperations, metadata_pb2.ListOperationsRequest(), timeout=10)
        == grpc.StatusCode.UNAUTHENTICATED
    )
    # With the mesh's token the same calls are served.
    good = ((HEADER, stack.service_token()),)
    assert _code(jobs.ListJobs, listing, metadata=good, timeout=10) == grpc.StatusCode.OK
    # Health stays open (load balancers, `make up`'s probes).
    health = health_pb2_grpc.HealthStub(channels["jobs"])
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
        health_pb2.HealthCheckResponse.SERVING
    )


def test_model_management_needs_an_admin_token(
    stack: Stack, channels: dict[str, grpc.Channel]
) -> None:
    inference = inference_pb2_grpc.InferenceServiceStub(channels["inference"])
    models = inference.ListModels(
        inference_pb2.ListModelsRequest(),
        metadata=((HEADER, stack.service_token()),),
        timeout=10,
    ).models
    assert models
    unload = inference_pb2.UnloadModelRequest(name="no-such-model")
    assert _code(inference.UnloadModel, unload, timeout=10) == grpc.StatusCode.UNAUTHENTICATED
    # A service's token (what the gateway holds) is not enough...
    plain = ((HEADER, stack.service_token()),)
    with pytest.raises(grpc.RpcError) as info:
        inference.UnloadModel(unload, metadata=plain, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "ADMIN_TOKEN_REQUIRED" in str(info.value.trailing_metadata())
    # ...an operator's admin token gets past the check (to the model lookup: not found).
    admin = ((HEADER, stack.service_token(admin=True)),)
    assert _code(inference.UnloadModel, unload, metadata=admin, timeout=10) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_the_public_api_still_takes_api_keys(rest_url: str, api_key: str) -> None:
    import httpx

    resp = httpx.get(f"{rest_url}/v1/jobs", headers={"authorization": f"Bearer {api_key}"})
    assert resp.status_code == 200, resp.text
