"""Pure rules of the job state machine: PENDING -> RUNNING -> SUCCEEDED / FAILED / CANCELLED.

Kept free of I/O so the rules are unit-tested on their own. The repository reads a job and its
stages into the records below (the job row locked), the service (services/jobs/service.py)
applies one transition to them in memory, and the repository writes the changed rows back with
the messages that announce the change, in one transaction. Payload columns (operations, outputs,
reports, ...) stay serialized protobuf here: the rules never look inside them
(services/jobs/mapping.py does).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from services.runtime.errors import invalid
from services.runtime.pipeline import METADATA

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
_OPEN = frozenset({PENDING, RUNNING})


class StageLike(Protocol):
    @property
    def idx(self) -> int: ...
    @property
    def service(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def input_key(self) -> str | None: ...
    @property
    def output_key(self) -> str | None: ...
    @property
    def rendition_outputs(self) -> bytes | None: ...


_S = TypeVar("_S", bound=StageLike)


@dataclass(frozen=True)
class StageView:
    idx: int
    service: str
    state: str
    input_key: str | None
    output_key: str | None
    rendition_outputs: bytes | None = None


@dataclass(eq=False)
class StageRecord:
    """A row of jobs.stages."""

    idx: int
    service: str
    state: str = PENDING
    operations: bytes = b""  # pixmesh.common.v1.Job holding only `operations`
    attempts: int = 0
    input_key: str | None = None
    output_key: str | None = None
    output: bytes | None = None  # pixmesh.common.v1.Output
    reports: bytes | None = None  # pixmesh.common.v1.Stage holding only `reports`
    renditions: bytes | None = None  # pixmesh.common.v1.Stage holding only `renditions`
    rendition_count: int = 0
    rendition_outputs: bytes | None = None  # TaskCompleted holding only `rendition_outputs`
    error_code: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class WebhookRecord:
    """A row of jobs.webhook_deliveries as the API shows it (the secret is never read here)."""

    url: str
    state: str
    attempts: int
    last_error: str | None = None
    delivered_at: datetime | None = None


@dataclass(eq=False)
class JobRecord:
    """A row of jobs.jobs with its stages (in order: `stages[i].idx == i`)."""

    job_id: str
    tenant_id: str
    image_id: str
    state: str
    operations: bytes  # pixmesh.common.v1.Job holding only `operations`
    source: bytes  # pixmesh.common.v1.Image
    deadline: datetime
    created_at: datetime
    updated_at: datetime
    stages: list[StageRecord]
    idempotency_key: str | None = None
    request_hash: str | None = None
    metadata: bytes | None = None  # pixmesh.common.v1.ImageMetadata
    renditions: bytes | None = None  # pixmesh.common.v1.Job holding only `renditions`
    error_code: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    finished_at: datetime | None = None
    webhook: WebhookRecord | None = None
    # CreateJob `reuse: false`: its tasks compute their outputs even when they are stored.
    recompute: bool = False
    # The batch whose feeder created the job (services/jobs/batches.py); None for a client's
    # job. Its tasks go to the batch lane (services/jobs/mapping.py `lane`).
    batch_id: str | None = None
    # Indexes of the stages a transition changed: only those are written back.
    changed: set[int] = field(default_factory=set)

    def stage(self, idx: int) -> StageRecord:
        self.changed.add(idx)
        return self.stages[idx]


@dataclass(frozen=True)
class Completion:
    """What a TaskCompleted reports, payloads serialized (None: not reported)."""

    output_key: str | None = None
    output: bytes | None = None
    reports: bytes | None = None
    metadata: bytes | None = None
    rendition_outputs: bytes | None = None
    rendition_output_count: int = 0
    # The delivery that completed it (0: not reported, from a worker that sent TaskStarted).
    attempt: int = 0


# ---- transitions ---------------------------------------------------------------------------


def start_stage(job: JobRecord, idx: int, attempt: int, now: datetime) -> None:
    """A worker took the stage's task (again, when `attempt` > 1)."""
    if job.stages[idx].state in _OPEN:
        stage = job.stage(idx)
        stage.state = RUNNING
        stage.attempts = max(stage.attempts, attempt)
        stage.started_at = stage.started_at or now
    if job.state == PENDING:
        job.state = RUNNING
        job.updated_at = now


def complete_stage(
    job: JobRecord, idx: int, done: Completion, source_key: str, now: datetime
) -> int | None:
    """Record the stage's result; returns the index of the stage to run next, if any."""
    expected = job.stages[idx].rendition_count
    if done.rendition_output_count != expected:
        # A worker that does not know renditions (or a broken one): failing the job says so,
        # where succeeding would hand out the wrong images.
        fail_stage(
            job,
            idx,
            0,
            "INTERNAL",
            "BAD_RENDITION_OUTPUTS",
            f"the stage reported {done.rendition_output_count} rendition outputs"
            f" for {expected} renditions",
            now,
        )
        return None
    stage = job.stage(idx)
    stage.state = SUCCEEDED
    stage.output_key = done.output_key
    stage.output = done.output
    stage.reports = done.reports
    stage.rendition_outputs = done.rendition_outputs
    # A fast task sends no TaskStarted: its completion stands for it.
    stage.attempts = max(stage.attempts, done.attempt)
    stage.started_at = stage.started_at or now
    stage.finished_at = now
    if done.metadata is not None:
        job.metadata = done.metadata
    job.updated_at = now
    if idx + 1 < len(job.stages):
        job.stage(idx + 1).input_key = next_input_key(job.stages, idx, source_key)
        job.state = RUNNING
        return idx + 1
    job.state = SUCCEEDED
    job.finished_at = now
    return None


def fail_stage(
    job: JobRecord,
    idx: int,
    attempts: int,
    code: str,
    reason: str,
    message: str,
    now: datetime,
) -> None:
    """The stage failed for good: so does the job."""
    stage = job.stage(idx)
    stage.state = FAILED
    stage.attempts = max(stage.attempts, attempts)
    stage.error_code, stage.error_reason, stage.error_message = code, reason, message
    stage.finished_at = now
    finish(job, FAILED, code, reason, message, now)


def finish(job: JobRecord, state: str, code: str, reason: str, message: str, now: datetime) -> None:
    """End the job (FAILED or CANCELLED) and cancel the stages that had not finished."""
    job.state = state
    job.error_code, job.error_reason, job.error_message = code, reason, message
    job.updated_at = now
    job.finished_at = now
    for stage in job.stages:
        if stage.state in _OPEN:
            job.changed.add(stage.idx)
            stage.state = CANCELLED
            stage.finished_at = now


def restart_failed(job: JobRecord, now: datetime, deadline: datetime) -> int:
    """Run a FAILED job again from its first unfinished stage; returns that stage's index."""
    idx = next(s.idx for s in job.stages if s.state != SUCCEEDED)
    job.state = RUNNING
    job.error_code = job.error_reason = job.error_message = None
    job.finished_at = None
    job.updated_at = now
    job.deadline = deadline
    for stage in job.stages[idx:]:
        job.changed.add(stage.idx)
        stage.state = PENDING
        stage.error_code = stage.error_reason = stage.error_message = None
        stage.started_at = stage.finished_at = None
    return idx


# ---- derived values ------------------------------------------------------------------------


def next_input_key(stages: Sequence[StageLike], done_idx: int, source_key: str) -> str:
    """Input of the stage after `done_idx`.

    Metadata always reads the uploaded source (outputs are stripped of EXIF); any other stage
    reads the latest image produced so far, or the source if none was.
    """
    nxt = stages[done_idx + 1]
    if nxt.service == METADATA:
        return source_key
    for stage in reversed(stages[: done_idx + 1]):
        if stage.output_key:
            return stage.output_key
    return source_key


def final_output_stage(stages: Sequence[_S]) -> _S | None:
    """The stage whose images are the job's outputs: the last one that made any (its renditions,
    or the one image of a plain job)."""
    for stage in reversed(stages):
        if stage.output_key or stage.rendition_outputs:
            return stage
    return None


def progress(stages: Sequence[StageLike]) -> float:
    if not stages:
        return 0.0
    return sum(1 for s in stages if s.state == SUCCEEDED) / len(stages)


def encode_page_token(created_at: datetime, job_id: str) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("page_token", "malformed page token", "BAD_PAGE_TOKEN") from exc
