"""Pure rules of the job state machine: PENDING -> RUNNING -> SUCCEEDED / FAILED / CANCELLED.

Kept free of I/O so the rules are unit-tested on their own; the repository applies them inside
one transaction per event.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.runtime.errors import invalid
from services.runtime.pipeline import METADATA

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclass(frozen=True)
class StageView:
    idx: int
    service: str
    state: str
    input_key: str | None
    output_key: str | None


def next_input_key(stages: Sequence[StageView], done_idx: int, source_key: str) -> str:
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


def final_output_stage(stages: Sequence[StageView]) -> StageView | None:
    """The stage whose image is the job's output: the last one that produced an image."""
    for stage in reversed(stages):
        if stage.output_key:
            return stage
    return None


def progress(stages: Sequence[StageView]) -> float:
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
