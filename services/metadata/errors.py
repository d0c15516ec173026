"""The metadata service's client-facing errors, one constructor per reason."""

from __future__ import annotations

import re
from typing import Final

from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, invalid

_SHA256: Final = re.compile(r"[0-9a-f]{64}")


def image_corrupt() -> InvalidArgument:
    return InvalidArgument(
        "image could not be read: corrupt or unsupported format", reason="IMAGE_CORRUPT"
    )


def image_too_large() -> InvalidArgument:
    return InvalidArgument("image has too many pixels", reason="IMAGE_TOO_LARGE")


def metadata_not_found() -> NotFound:
    return NotFound("no metadata for this image", reason="METADATA_NOT_FOUND")


def no_perceptual_hash() -> FailedPrecondition:
    return FailedPrecondition(
        "this image's pixels could not be decoded, so it has no perceptual hash to compare",
        reason="NO_PERCEPTUAL_HASH",
    )


def gps_disabled() -> FailedPrecondition:
    return FailedPrecondition(
        "this deployment does not keep GPS positions (strip_gps), so it cannot search by them",
        reason="GPS_DISABLED",
    )


def checked_sha256(value: str) -> str:
    """The canonical (lower-case hex) form of a client-supplied digest, or INVALID_SHA256."""
    digest = value.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise invalid("sha256", "must be 64 hexadecimal digits", "INVALID_SHA256")
    return digest


def checked_tenant(tenant_id: str) -> str:
    """Internal callers (the gateway) always scope a call to a tenant; an empty one is a bug."""
    if not tenant_id:
        raise invalid("tenant_id", "required", "TENANT_REQUIRED")
    return tenant_id
