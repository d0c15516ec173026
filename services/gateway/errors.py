"""Errors raised by the gateway (runtime ServiceError subclasses)."""

from __future__ import annotations

from services.runtime.errors import FailedPrecondition, NotFound, Unavailable


def image_not_found(image_id: str) -> NotFound:
    return NotFound(message=f"image {image_id} not found", reason="IMAGE_NOT_FOUND")


def operation_unavailable(field: str, name: str, why: str) -> FailedPrecondition:
    """`field` is the operation's path, e.g. "operations[2]" or "renditions[0].operations[1]"."""
    return FailedPrecondition(
        message=f"{field}: {name} is not available in this deployment: {why}",
        reason="OPERATION_UNAVAILABLE",
        metadata={"operation": name},
    )


def idempotency_mismatch() -> FailedPrecondition:
    return FailedPrecondition(
        message="idempotency key was already used with a different request",
        reason="IDEMPOTENCY_KEY_REUSED",
    )


def metadata_pending(image_id: str) -> Unavailable:
    return Unavailable(
        message=f"the metadata of image {image_id} is still being extracted; retry shortly",
        reason="METADATA_PENDING",
    )


def upload_not_found(upload_id: str) -> NotFound:
    return NotFound(
        message=f"upload {upload_id} not found (unknown, expired or another tenant's)",
        reason="UPLOAD_NOT_FOUND",
    )


def upload_missing(upload_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"nothing was uploaded for {upload_id}: PUT the bytes to its URL first",
        reason="UPLOAD_MISSING",
    )
