"""Typed exceptions for failed calls, and the one codec of pixmesh's error statuses.

A failed call carries a `google.rpc.Status` in the `grpc-status-details-bin` trailer with an
`ErrorInfo` (a machine-readable reason, domain "pixmesh.dev", metadata), `BadRequest` (field
violations) and `RetryInfo` (how long to wait) details. `ErrorStatus` is that status in Python:
`to_proto` is what the services send (services/runtime/server.py), `ErrorStatus.of` reads it
back from any `grpc.RpcError` — in the SDK here, and in a service that called another one
(services/runtime/errors.py). grpcio-status is not a dependency of the SDK, so the trailer is
decoded with the messages from googleapis-common-protos.

Each status code has its exception class (`NotFound`, `InvalidArgument`, ...), and the reasons a
program is likely to handle have their own subclass of it, so both of these work:

    try:
        client.get_job(job_id)
    except pixmesh.JobNotFound:
        ...
    except pixmesh.errors.NotFound as error:  # any other NOT_FOUND; error.reason says which
        ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from pixmesh.common.v1.errors_pb2 import Error

__all__ = [
    "ApiKeyInvalid",
    "DeadlineExceeded",
    "ErrorStatus",
    "FailedPrecondition",
    "FieldViolation",
    "IdempotencyKeyReused",
    "ImageNotFound",
    "ImageTooLarge",
    "Internal",
    "InvalidArgument",
    "JobNotFound",
    "NotFound",
    "OperationUnavailable",
    "OutputNotFound",
    "PermissionDenied",
    "PixmeshError",
    "QueueFull",
    "QuotaExceeded",
    "RateLimited",
    "ResourceExhausted",
    "ScopeMissing",
    "Unauthenticated",
    "Unavailable",
    "UploadNotFound",
    "from_rpc_error",
]

# ErrorInfo.domain of every pixmesh error.
DOMAIN = "pixmesh.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request, from `google.rpc.BadRequest`."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class ErrorStatus:
    """A failed call's status: the code, a client-safe message and the details pixmesh sends.
    An empty `reason` reads as the code's name."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = DOMAIN
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    retry_delay: float | None = None

    def to_proto(self) -> status_pb2.Status:
        """The google.rpc.Status: ErrorInfo always, BadRequest with violations, RetryInfo with
        a retry delay."""
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.add().Pack(
            error_details_pb2.ErrorInfo(
                reason=self.reason or self.code.name,
                domain=self.domain,
                metadata=dict(self.metadata),
            )
        )
        if self.violations:
            bad = error_details_pb2.BadRequest()
            for v in self.violations:
                bad.field_violations.add(field=v.field, description=v.description, reason=v.reason)
            status.details.add().Pack(bad)
        if self.retry_delay is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(round(self.retry_delay * 1e9))
            status.details.add().Pack(retry)
        return status

    @classmethod
    def of(cls, error: grpc.RpcError) -> ErrorStatus:
        """The status a sync or asyncio `grpc.RpcError` carries. Without a (readable) details
        trailer: its code and details alone, the code's name as the reason."""
        code = _call_attr(error, "code") or grpc.StatusCode.UNKNOWN
        message = _call_attr(error, "details") or ""
        status = _status_from_trailers(_call_attr(error, "trailing_metadata") or ())
        if status is None:
            return cls(code=code, message=message, reason=code.name, domain="")
        return cls(code=code, message=status.message or message, **_parse_details(status))


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
    fields: dict[str, Any] = {"reason": "", "domain": ""}
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
    fields["violations"] = tuple(violations)
    return fields


# ---- the exceptions --------------------------------------------------------------------------


class PixmeshError(Exception):
    """Base of every error the SDK raises for a failed call.

    `reason` is the ErrorInfo reason (UPPER_SNAKE, e.g. "IMAGE_CORRUPT"), or the status code name
    when the server sent none; branch on it (or on the reason's class), not on `message`.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

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


# ---- one class a reason worth handling (the class of its status code above it) ---------------


class DomainError(PixmeshError):
    """An error whose ErrorInfo reason has its own class: `REASON`, a value name of
    pixmesh.common.v1.Error.Reason (the list of reasons, protos/pixmesh/common/v1/errors.proto)."""

    REASON: ClassVar[str] = ""


class JobNotFound(DomainError, NotFound):
    """No job with this id for the caller's tenant."""

    REASON = Error.Reason.Name(Error.JOB_NOT_FOUND)


class ImageNotFound(DomainError, NotFound):
    """No image with this id for the caller's tenant."""

    REASON = Error.Reason.Name(Error.IMAGE_NOT_FOUND)


class OutputNotFound(DomainError, NotFound):
    """The job has no output with this index."""

    REASON = Error.Reason.Name(Error.OUTPUT_NOT_FOUND)


class UploadNotFound(DomainError, NotFound):
    """A presigned upload that is unknown, expired or another tenant's."""

    REASON = Error.Reason.Name(Error.UPLOAD_NOT_FOUND)


class ImageTooLarge(DomainError, InvalidArgument):
    """The image is over the deployment's byte limit."""

    REASON = Error.Reason.Name(Error.IMAGE_TOO_LARGE)


class IdempotencyKeyReused(DomainError, FailedPrecondition):
    """The idempotency key was already used with a different request."""

    REASON = Error.Reason.Name(Error.IDEMPOTENCY_KEY_REUSED)


class OperationUnavailable(DomainError, FailedPrecondition):
    """An operation this deployment cannot run now (e.g. no model loaded)."""

    REASON = Error.Reason.Name(Error.OPERATION_UNAVAILABLE)


class ApiKeyInvalid(DomainError, Unauthenticated):
    """The API key is unknown, expired or revoked."""

    REASON = Error.Reason.Name(Error.API_KEY_INVALID)


class ScopeMissing(DomainError, PermissionDenied):
    """The API key lacks the scope the call needs (`metadata["scope"]`)."""

    REASON = Error.Reason.Name(Error.SCOPE_MISSING)


class QueueFull(DomainError, ResourceExhausted):
    """A worker queue is over its limit; `retry_delay` says when to try again."""

    REASON = Error.Reason.Name(Error.QUEUE_FULL)


class RateLimited(DomainError, ResourceExhausted):
    """The API key sent more requests per second than it may; see `retry_delay`."""

    REASON = Error.Reason.Name(Error.RATE_LIMITED)


class QuotaExceeded(DomainError, ResourceExhausted):
    """A tenant quota (running jobs, jobs per day, stored bytes) is used up."""

    REASON = Error.Reason.Name(Error.QUOTA_EXCEEDED)


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
_BY_REASON: dict[tuple[grpc.StatusCode, str], type[PixmeshError]] = {
    (cls.default_code, cls.REASON): cls for cls in DomainError.__subclasses__()
}


def error_class(code: grpc.StatusCode, reason: str) -> type[PixmeshError]:
    """The most specific class for a status: the reason's (when sent with its usual code), else
    the code's, else PixmeshError."""
    return _BY_REASON.get((code, reason)) or _BY_CODE.get(code, PixmeshError)


def from_status(status: ErrorStatus) -> PixmeshError:
    """The exception for a status (its fields are the exception's keyword arguments)."""
    fields = {f.name: getattr(status, f.name) for f in dataclasses.fields(status)}
    return error_class(status.code, status.reason)(fields.pop("message"), **fields)


def from_rpc_error(error: grpc.RpcError) -> PixmeshError:
    """Translate a sync or asyncio `grpc.RpcError` into the matching `PixmeshError` subclass."""
    return from_status(ErrorStatus.of(error))
