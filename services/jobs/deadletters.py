"""Dead letters for operators: read the newest from PIXMESH_DLQ, replay a FAILED job.

One reader (`newest`) for both of their views: the API's (ListDeadLetters, ReplayJob, served to
admin keys through the gateway: each letter's public summary, no task payload) and the
`python -m services.jobs.admin dlq` commands' (the whole `DeadLetter` event as JSON). Each dead
letter is a `DeadLetter` event on `pixmesh.dlq.<service>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from google.protobuf import json_format
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pixmesh.common.v1 import fleet_pb2, job_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs.service import JobsService
from services.runtime.bus import DLQ_STREAM

log = logging.getLogger(__name__)

DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class Letter:
    """One message of PIXMESH_DLQ as stored."""

    seq: int
    subject: str
    data: bytes

    def event(self) -> events_pb2.DeadLetter:
        """The DeadLetter event it holds; raises on a foreign payload."""
        return events_pb2.DeadLetter.FromString(self.data)


async def newest(js: JetStreamContext, limit: int) -> list[Letter]:
    """Up to `limit` dead letters, newest first."""
    info = await js.stream_info(DLQ_STREAM)
    out: list[Letter] = []
    seq = info.state.last_seq
    while seq >= max(info.state.first_seq, 1) and len(out) < limit:
        try:
            msg = await js.get_msg(DLQ_STREAM, seq)
        except NotFoundError:  # deleted by retention since stream_info
            seq -= 1
            continue
        out.append(Letter(seq, msg.subject or "", msg.data or b""))
        seq -= 1
    return out


def summary(letter: Letter) -> fleet_pb2.DeadLetter:
    """The public view of one letter; an unreadable payload keeps its seq and service."""
    out = fleet_pb2.DeadLetter(seq=letter.seq, service=letter.subject.rsplit(".", 1)[-1])
    try:
        dead = letter.event()
    except Exception:  # a foreign message on the subject: shown, not fatal
        log.warning("unreadable dead letter", extra={"seq": letter.seq})
        return out
    t = dead.task
    out.job_id, out.tenant_id, out.task_id = t.job_id, t.tenant_id, t.task_id
    out.stage_index, out.deliveries = t.stage_index, dead.deliveries
    out.error.CopyFrom(dead.error)
    if dead.HasField("time"):
        out.time.CopyFrom(dead.time)
    return out


def as_dict(letter: Letter) -> dict[str, object]:
    """The operator's view (the admin CLI's JSON lines): the whole event, task included."""
    entry: dict[str, object] = {"seq": letter.seq, "subject": letter.subject}
    try:
        entry.update(json_format.MessageToDict(letter.event(), preserving_proto_field_name=True))
    except Exception:
        entry["raw_bytes"] = len(letter.data)
    return entry


class DeadLetters:
    def __init__(self, js: JetStreamContext, service: JobsService) -> None:
        self._js = js
        self._service = service

    async def newest(self, limit: int) -> list[Letter]:
        return await newest(self._js, limit)

    async def list(self, page_size: int) -> list[fleet_pb2.DeadLetter]:
        """Up to `page_size` (default DEFAULT_PAGE, at most MAX_PAGE) summaries, newest first."""
        letters = await self.newest(min(page_size or DEFAULT_PAGE, MAX_PAGE))
        return [summary(letter) for letter in letters]

    async def replay(self, job_id: str) -> job_pb2.Job:
        return await self._service.retry_failed(job_id)
