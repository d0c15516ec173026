"""Operator commands for dead letters.

    python -m services.jobs.admin dlq list [--limit N]   # what was given up, newest last
    python -m services.jobs.admin dlq replay JOB_ID      # run a FAILED job again from its failed stage

Uses the same PIXMESH_* settings as the jobs service (NATS URL, database URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json

from google.protobuf import json_format

from pixmesh.events.v1 import events_pb2
from services.jobs.app import MIGRATIONS
from services.jobs.repository import JobsRepository
from services.jobs.settings import JobsSettings
from services.runtime import db
from services.runtime.bus import DLQ_STREAM, Bus


async def dlq_list(settings: JobsSettings, limit: int) -> list[dict[str, object]]:
    bus = await Bus.connect(
        settings.nats_url, "pixmesh-jobs-admin", stream_replicas=settings.stream_replicas
    )
    try:
        info = await bus.js.stream_info(DLQ_STREAM)
        first = max(info.state.first_seq, info.state.last_seq - limit + 1)
        entries: list[dict[str, object]] = []
        for seq in range(first, info.state.last_seq + 1):
            try:
                msg = await bus.js.get_msg(DLQ_STREAM, seq)
            except Exception:  # deleted by retention between stream_info and get_msg
                continue
            entry: dict[str, object] = {"seq": seq, "subject": msg.subject}
            try:
                dead = events_pb2.DeadLetter.FromString(msg.data or b"")
                entry.update(json_format.MessageToDict(dead, preserving_proto_field_name=True))
            except Exception:
                entry["raw_bytes"] = len(msg.data or b"")
            entries.append(entry)
        return entries
    finally:
        await bus.close()


async def dlq_replay(settings: JobsSettings, job_id: str) -> dict[str, object]:
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool, "jobs", MIGRATIONS)
        job = await JobsRepository(pool, job_timeout_s=settings.job_timeout_s).retry_failed(job_id)
        return json_format.MessageToDict(job, preserving_proto_field_name=True)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.jobs.admin")
    sub = parser.add_subparsers(dest="area", required=True)
    dlq = sub.add_parser("dlq", help="dead-lettered tasks").add_subparsers(
        dest="command", required=True
    )
    listing = dlq.add_parser("list", help="print dead letters as JSON lines")
    listing.add_argument("--limit", type=int, default=50)
    replay = dlq.add_parser("replay", help="run a FAILED job again from its failed stage")
    replay.add_argument("job_id")
    args = parser.parse_args(argv)
    settings = JobsSettings()
    if args.command == "list":
        for entry in asyncio.run(dlq_list(settings, args.limit)):
            print(json.dumps(entry))
    else:
        print(json.dumps(asyncio.run(dlq_replay(settings, args.job_id)), indent=2))


if __name__ == "__main__":
    main()
