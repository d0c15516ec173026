"""Dead letters for operators: read the newest from PIXMESH_DLQ, replay a FAILED job.

Served to admin keys through the gateway (ListDeadLetters, ReplayJob) and used by the
`python -m services.jobs.admin dlq` commands. Each dead letter is a `DeadLetter` event on
`pixmesh.dlq.<service>`; what operators see is its public summary (no task payload)."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pixmesh.common.v1 import fleet_pb2, job_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs.repository import JobsRepository
from services.runtime.bus import DLQ_STREAM

log = logging.getLogger(__name__)

DEFAULT_PAGE = 50
MAX_PAGE = 500


def summary(seq: int, subject: str, data: bytes) -> fleet_pb2.DeadLetter:
    """The public view of one DLQ message; an unreadable payload keeps its seq and service."""
    out = fleet_pb2.DeadLetter(seq=seq, service=subject.rsplit(".", 1)[-1])
    try:
        dead = events_pb2.DeadLetter.FromString(data)
    except Exception:  # a foreign message on the subject: shown, not fatal
        log.warning("unreadable dead letter", extra={"seq": seq})
        return out
    t = dead.task
    out.job_id, out.tenant_id, out.task_id = t.job_id, t.tenant_id, t.task_id
    out.stage_index, out.deliveries = t.stage_index, dead.deliveries
    out.error.CopyFrom(dead.error)
    if dead.HasField("time"):
        out.time.CopyFrom(dead.time)
    return out


async def newest(js: JetStreamContext, page_size: int = 0) -> list[fleet_pb2.DeadLetter]:
    """Up to `page_size` dead letters (default DEFAULT_PAGE, at most MAX_PAGE), newest first."""
    limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
    info = await js.stream_info(DLQ_STREAM)
    out: list[fleet_pb2.DeadLetter] = []
    seq = info.state.last_seq
    while seq >= max(info.state.first_seq, 1) and len(out) < limit:
        try:
            msg = await js.get_msg(DLQ_STREAM, seq)
        except NotFoundError:  # deleted by retention since stream_info
            seq -= 1
            continue
        out.append(summary(seq, msg.subject or "", msg.data or b""))
        seq -= 1
    return out


class DeadLetters:
    def __init__(self, js: JetStreamContext, repo: JobsRepository) -> None:
        self._js = js
        self._repo = repo

    async def list(self, page_size: int) -> list[fleet_pb2.DeadLetter]:
        return await newest(self._js, page_size)

    async def replay(self, job_id: str) -> job_pb2.Job:
        return await self._repo.retry_failed(job_id)
