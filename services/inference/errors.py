"""Errors of the inference service, with their reasons (ErrorInfo.reason) in one place.

Image reasons (EMPTY_IMAGE, UNSUPPORTED_FORMAT, IMAGE_CORRUPT, IMAGE_TOO_LARGE, TOO_MANY_PIXELS,
TOO_MANY_FRAMES) come from `services.runtime.imageprobe`.
"""

from __future__ import annotations

from services.runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    invalid,
)

# No model can serve the request (none loaded, or the one asked for is not loaded).
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
UNKNOWN_MODEL = "UNKNOWN_MODEL"
MODEL_LOAD_FAILED = "MODEL_LOAD_FAILED"
# Parameters out of range or contradictory (auto together with a sigma, ...).
INVALID_OPERATION = "INVALID_OPERATION"
UNSUPPORTED_OPERATION = "UNSUPPORTED_OPERATION"
# The synchronous Denoise RPC takes small images only; larger ones go through a job.
SYNC_IMAGE_TOO_LARGE = "SYNC_IMAGE_TOO_LARGE"
OVERLOADED = "OVERLOADED"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"

__all__ = ["ServiceError"]


def no_model(reason: str) -> FailedPrecondition:
    return FailedPrecondition(message=f"denoise is unavailable: {reason}", reason=MODEL_UNAVAILABLE)


def unknown_model(name: str) -> NotFound:
    return NotFound(message=f"no model {name!r} in the model repository", reason=UNKNOWN_MODEL)


def not_loaded(name: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"model {name!r} is not loaded ({why})", reason=MODEL_UNAVAILABLE
    )


def load_failed(key: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(message=f"cannot load {key}: {why}", reason=MODEL_LOAD_FAILED)


def bad_parameter(path: str, description: str) -> InvalidArgument:
    return invalid(path, description, INVALID_OPERATION)


def unsupported_operation(path: str, name: str) -> InvalidArgument:
    return invalid(path, f"{name or 'an empty operation'} does not run on the inference service",
                   UNSUPPORTED_OPERATION)  # fmt: skip


def too_large_for_sync(pixels: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        message=f"the image has {pixels} pixels; Denoise takes at most {limit} "
        "(create a job for larger images)",
        reason=SYNC_IMAGE_TOO_LARGE,
    )


def overloaded() -> ResourceExhausted:
    return ResourceExhausted(
        message="too many Denoise calls in progress; retry later", reason=OVERLOADED
    )


def deadline() -> DeadlineExceeded:
    return DeadlineExceeded(
        message="the deadline passed before denoising finished", reason=DEADLINE_EXCEEDED
    )
