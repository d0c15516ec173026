"""Typed errors: each reason class sits under its status code's class, names a reason of the one
list (Error.Reason), and the codec round-trips a status between a service and the SDK."""

from __future__ import annotations

import grpc
import pytest

import pixmesh
from pixmesh import errors
from pixmesh.common.v1.errors_pb2 import Error


class Call(grpc.RpcError):
    """A failed call as grpc hands it over: code, details and the status trailer."""

    def __init__(self, status: errors.ErrorStatus) -> None:
        self.status = status

    def code(self) -> grpc.StatusCode:
        return self.status.code

    def details(self) -> str:
        return self.status.message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((errors.STATUS_DETAILS_KEY, self.status.to_proto().SerializeToString()),)


DOMAIN_ERRORS = errors.DomainError.__subclasses__()


@pytest.mark.parametrize("cls", DOMAIN_ERRORS, ids=lambda cls: cls.__name__)
def test_each_reason_class_names_a_reason_and_its_code(cls: type[errors.DomainError]) -> None:
    assert Error.Reason.Value(cls.REASON) != Error.REASON_UNSPECIFIED
    (code_class,) = [b for b in cls.__mro__[1:] if b in errors._BY_CODE.values()]
    assert cls.default_code == code_class.default_code
    assert getattr(pixmesh, cls.__name__) is cls  # `except pixmesh.JobNotFound`

    error = errors.from_rpc_error(Call(errors.ErrorStatus(cls.default_code, "x", cls.REASON)))
    assert type(error) is cls and isinstance(error, code_class)
    assert (error.code, error.reason, error.message) == (cls.default_code, cls.REASON, "x")


def test_a_reason_under_another_code_gets_the_codes_class() -> None:
    status = errors.ErrorStatus(grpc.StatusCode.INTERNAL, "odd", "JOB_NOT_FOUND")
    error = errors.from_rpc_error(Call(status))
    assert type(error) is errors.Internal and error.reason == "JOB_NOT_FOUND"


def test_the_status_round_trips_with_every_detail() -> None:
    sent = errors.ErrorStatus(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        "RATE_LIMITED",
        metadata={"limit": "5"},
        violations=(errors.FieldViolation("a.b", "too big", "TOO_BIG"),),
        retry_delay=1.25,
    )
    assert errors.ErrorStatus.of(Call(sent)) == sent
