"""One error model for every service.

A `ServiceError` carries a gRPC status code, a message that is safe to show to clients, a
machine-readable reason, whether retrying can help and, optionally, how long to wait first. The
gRPC interceptor turns it into a `google.rpc.Status` with ErrorInfo/BadRequest/RetryInfo details; the bus consumer turns a retryable error
into nak(delay) and anything else into term + TaskFailed. Internal text never reaches clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

# The status codec and the field violation are the SDK's (pixmesh/errors.py): one encoder and one
# decoder for both ends of every call.
from pixmesh.errors import DOMAIN, ErrorStatus, FieldViolation

__all__ = ["DOMAIN", "ErrorStatus", "FieldViolation"]  # and the classes and helpers below


@dataclass
class ServiceError(Exception):
    message: str
    reason: str = "INTERNAL"
    violations: Sequence[FieldViolation] = field(default_factory=tuple)
    metadata: Mapping[str, str] = field(default_factory=dict)

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False
    # Seconds the caller should wait before retrying (google.rpc.RetryInfo); None: no advice.
    retry_delay: float | None = None

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return f"{self.code.name}/{self.reason}: {self.message}"

    def status(self, message: str | None = None) -> ErrorStatus:
        """What a client is told (`message` replaces the error's own, e.g. shortened)."""
        return ErrorStatus(
            code=self.code,
            message=self.message if message is None else message,
            reason=self.reason,
            metadata=self.metadata,
            violations=tuple(self.violations),
            retry_delay=self.retry_delay,
        )


@dataclass
class InvalidArgument(ServiceError):
    reason: str = "INVALID_ARGUMENT"
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class NotFound(ServiceError):
    reason: str = "NOT_FOUND"
    code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND


@dataclass
class AlreadyExists(ServiceError):
    reason: str = "ALREADY_EXISTS"
    code: grpc.StatusCode = grpc.StatusCode.ALREADY_EXISTS


@dataclass
class FailedPrecondition(ServiceError):
    reason: str = "FAILED_PRECONDITION"
    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class Unauthenticated(ServiceError):
    reason: str = "UNAUTHENTICATED"
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class PermissionDenied(ServiceError):
    reason: str = "PERMISSION_DENIED"
    code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class ResourceExhausted(ServiceError):
    reason: str = "RESOURCE_EXHAUSTED"
    code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED
    retryable: bool = True


@dataclass
class DeadlineExceeded(ServiceError):
    reason: str = "DEADLINE_EXCEEDED"
    code: grpc.StatusCode = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass
class Unavailable(ServiceError):
    """A dependency is down or overloaded; the same request may succeed later."""

    reason: str = "UNAVAILABLE"
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    retryable: bool = True


@dataclass
class Internal(ServiceError):
    """A bug or an unexpected failure. Retryable: at-least-once delivery gives it another go."""

    message: str = "internal error"
    reason: str = "INTERNAL"
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = True


def invalid(field_name: str, description: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    """Shorthand for a single field violation."""
    return InvalidArgument(
        message=f"{field_name}: {description}",
        reason=reason,
        violations=(FieldViolation(field_name, description),),
    )


def from_rpc_error(exc: grpc.aio.AioRpcError) -> ServiceError:
    """Rebuild the ServiceError a downstream service raised, from its status and details,
    so a hop passes the code, reason and field violations on unchanged."""
    status = ErrorStatus.of(exc)
    if not status.domain:
        # No details trailer: a status gRPC made itself (the sibling down, a deadline, a
        # transport failure), whose text names addresses and internals: not for clients.
        if status.code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(
                message="a service this call needs is temporarily unavailable; retry shortly",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": "service"},
                retry_delay=1.0,
            )
        return ServiceError(
            message=f"a call to another service failed ({status.code.name})",
            reason=status.code.name,
            code=status.code,
            retryable=status.code == grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
    return ServiceError(
        message=status.message or status.code.name,
        reason=status.reason or status.code.name,
        violations=status.violations,
        metadata=dict(status.metadata),
        code=status.code,
        retryable=status.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED),
        retry_delay=status.retry_delay,
    )


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """Re-raise a failed call to a sibling service as the ServiceError its status carries."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from exc
