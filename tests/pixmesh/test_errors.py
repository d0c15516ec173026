from __future__ import annotations

import grpc
import pytest

import pixmesh
from pixmesh import errors
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import Abort, FakeGateway


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.ALREADY_EXISTS, errors.PixmeshError),
    ],
)
def test_each_status_code_maps_to_its_exception(
    sync_target: str, fake: FakeGateway, code: grpc.StatusCode, cls: type[errors.PixmeshError]
) -> None:
    fake.fail_next("ListOperations", Abort(code, "nope"))
    with pixmesh.Client(sync_target, API_KEY, retries=0) as client, pytest.raises(cls) as info:
        client.list_operations()
    assert type(info.value) is cls
    assert info.value.code == code
    assert info.value.message == "nope"
    assert info.value.reason == code.name  # no ErrorInfo: the code name stands in
    assert info.value.violations == ()


def test_error_info_and_field_violations_come_from_the_status_details(
    sync_target: str, fake: FakeGateway
) -> None:
    fake.fail_next(
        "CreateJob",
        Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "2 operations are invalid",
            reason="OPERATION_INVALID",
            violations=[
                ("operations[0].resize.width", "must be at most 16384"),
                ("operations[1].convert.format", "AVIF is not enabled"),
            ],
        ),
    )
    with (
        pixmesh.Client(sync_target, API_KEY) as client,
        pytest.raises(errors.InvalidArgument) as info,
    ):
        image = client.upload(b"x")
        client.create_job(image.image_id, ["resize=20000x10", "convert=avif"])
    error = info.value
    assert error.reason == "OPERATION_INVALID"
    assert error.domain == "pixmesh.dev"
    assert error.metadata == {"hint": "fake"}
    assert error.message == "2 operations are invalid"
    assert error.violations == (
        errors.FieldViolation("operations[0].resize.width", "must be at most 16384"),
        errors.FieldViolation("operations[1].convert.format", "AVIF is not enabled"),
    )
    assert str(error) == (
        "OPERATION_INVALID: 2 operations are invalid (operations[0].resize.width: must be at "
        "most 16384; operations[1].convert.format: AVIF is not enabled)"
    )


def test_retry_info_becomes_retry_delay(sync_target: str, fake: FakeGateway) -> None:
    fake.fail_next(
        "ListOperations",
        Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", "RATE_LIMITED", retry_delay_s=1.5),
    )
    with (
        pixmesh.Client(sync_target, API_KEY) as client,
        pytest.raises(errors.ResourceExhausted) as info,
    ):
        client.list_operations()
    assert info.value.reason == "RATE_LIMITED"
    assert info.value.retry_delay == 1.5
    assert fake.count("ListOperations") == 1  # RESOURCE_EXHAUSTED is not retried for you


def test_the_servers_own_not_found_carries_its_reason(sync_target: str) -> None:
    with pixmesh.Client(sync_target, API_KEY) as client, pytest.raises(errors.NotFound) as info:
        client.get_job("job_missing")
    assert info.value.reason == "JOB_NOT_FOUND"


class _BrokenCall(grpc.RpcError):
    """An RpcError whose trailer is garbage, and one that is not a grpc.Call at all."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND

    def details(self) -> str:
        return "gone"

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return (("grpc-status-details-bin", b"\xff\xff not a status"),)


def test_a_garbled_trailer_does_not_hide_the_status() -> None:
    error = errors.from_rpc_error(_BrokenCall())
    assert isinstance(error, errors.NotFound)
    assert (error.reason, error.message) == ("NOT_FOUND", "gone")


def test_a_bare_rpc_error_becomes_unknown() -> None:
    error = errors.from_rpc_error(grpc.RpcError())
    assert type(error) is errors.PixmeshError
    assert error.code == grpc.StatusCode.UNKNOWN
