"""Errors of the inference service."""

from __future__ import annotations

from services.runtime.errors import FailedPrecondition


def no_model(reason: str) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"denoise is unavailable: {reason}", reason="MODEL_UNAVAILABLE"
    )
