"""Typed errors over the real stack (SDK -> Envoy -> gateway -> jobs and back): the reason a
service raised arrives as its own exception class, under its status code's class."""

from __future__ import annotations

import pytest

import pixmesh
from deploy.local import Stack
from pixmesh import errors

pytestmark = pytest.mark.integration


def test_a_missing_job_raises_job_not_found(grpc_target: str, api_key: str) -> None:
    with pixmesh.Client(grpc_target, api_key, timeout=30) as client:
        with pytest.raises(pixmesh.JobNotFound) as info:
            client.get_job("job_does_not_exist")
        # Raised by the jobs service, passed on by the gateway (services/runtime/errors.py) and
        # decoded by the SDK: one codec at each hop, the reason unchanged.
        error = info.value
        assert isinstance(error, errors.NotFound) and isinstance(error, pixmesh.PixmeshError)
        assert error.reason == "JOB_NOT_FOUND" and error.domain == errors.DOMAIN
        assert "job_does_not_exist" in error.message
        with pytest.raises(pixmesh.ImageNotFound):
            client.create_job("img_does_not_exist", ["resize=10x10"])


async def test_the_async_client_raises_the_same_classes(grpc_target: str, api_key: str) -> None:
    async with pixmesh.AsyncClient(grpc_target, api_key, timeout=30) as client:
        with pytest.raises(pixmesh.JobNotFound):
            await client.get_job("job_does_not_exist")


def test_a_read_key_cannot_write(grpc_target: str, stack: Stack) -> None:
    reader = stack.create_api_key("dev", "read")
    with (
        pixmesh.Client(grpc_target, reader, timeout=30) as client,
        pytest.raises(pixmesh.ScopeMissing) as info,
    ):
        client.cancel_job("job_does_not_exist")
    assert isinstance(info.value, errors.PermissionDenied)
    assert info.value.metadata["scope"] == "write"
