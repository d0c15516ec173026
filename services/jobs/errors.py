"""Errors of the job registry (all are runtime ServiceError subclasses)."""

from __future__ import annotations

from services.runtime.errors import FailedPrecondition, NotFound


def job_not_found(job_id: str) -> NotFound:
    return NotFound(message=f"job {job_id} not found", reason="JOB_NOT_FOUND")


def idempotency_mismatch() -> FailedPrecondition:
    return FailedPrecondition(
        message="idempotency key was already used with a different request",
        reason="IDEMPOTENCY_KEY_REUSED",
    )


def job_finished(job_id: str, state: str) -> FailedPrecondition:
    return FailedPrecondition(message=f"job {job_id} is already {state}", reason="JOB_FINISHED")


def output_not_ready(job_id: str, state: str) -> FailedPrecondition:
    if state in ("FAILED", "CANCELLED"):
        return FailedPrecondition(
            message=f"job {job_id} is {state} and will have no output", reason="JOB_NOT_SUCCEEDED"
        )
    return FailedPrecondition(message=f"job {job_id} has no output yet", reason="OUTPUT_NOT_READY")


def output_not_found(job_id: str, index: int) -> NotFound:
    return NotFound(message=f"job {job_id} has no output {index}", reason="OUTPUT_NOT_FOUND")


def job_not_failed(job_id: str, state: str) -> FailedPrecondition:
    return FailedPrecondition(
        message=f"job {job_id} is {state}; only FAILED jobs can be retried", reason="JOB_NOT_FAILED"
    )
