"""Typed exceptions for gRPC failures.

The gateway reports errors as a `google.rpc.Status` with `ErrorInfo` (a machine-readable reason)
and `BadRequest` (field violations) details, carried in the `grpc-status-details-bin` trailer.
grpcio-status is not a dependency of the SDK, so the trailer is decoded here with the messages
from googleapis-common-protos.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PixmeshError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, from `google.rpc.BadRequest`."""

    field: str
    description: str
    reason: str = ""


class PixmeshError(Exception):
    """Base of every error the SDK raises for a failed call.

    `reason` is the ErrorInfo reason (UPPER_SNAKE, e.g. "IMAGE_CORRUPT"), or the status code name
    when the server sent none; branch on it, not on `message`.
    """

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = code or self.default_code
        self.reason = reason or self.code.name
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        # From google.rpc.RetryInfo: how long the server asks the caller to wait.
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        text = f"{self.reason}: {self.message}" if self.message else self.reason
        if self.violations:
            text += " (" + "; ".join(f"{v.field}: {v.description}" for v in self.violations) + ")"
        return text


class InvalidArgument(PixmeshError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PixmeshError):
    default_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(PixmeshError):
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(PixmeshError):
    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(PixmeshError):
    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(PixmeshError):
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(PixmeshError):
    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PixmeshError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(PixmeshError):
    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[PixmeshError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> PixmeshError:
    """Translate a sync or asyncio `grpc.RpcError` into the matching `PixmeshError` subclass."""
    code = _call_attr(error, "code") or grpc.StatusCode.UNKNOWN
    message = _call_attr(error, "details") or ""
    status = _status_from_trailers(_call_attr(error, "trailing_metadata") or ())
    fields: dict[str, Any] = {}
    if status is not None:
        message = status.message or message
        fields = _parse_details(status)
    cls = _BY_CODE.get(code, PixmeshError)
    return cls(message, code=code, **fields)


def _call_attr(error: grpc.RpcError, name: str) -> Any:
    # A bare RpcError (e.g. raised by a channel that never started a call) is not a grpc.Call.
    method = getattr(error, name, None)
    return method() if callable(method) else None


def _status_from_trailers(trailers: Iterable[tuple[str, str | bytes]]) -> status_pb2.Status | None:
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                return None  # a garbled trailer must not hide the real status code
            return status
    return None


def _parse_details(status: status_pb2.Status) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        elif detail.Unpack(bad):
            violations.extend(
                FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
            )
        elif detail.Unpack(retry):
            fields["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
    if violations:
        fields["violations"] = violations
    return fields
