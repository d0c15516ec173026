"""Operator commands for dead letters.

    python -m services.jobs.admin dlq list [--limit N]   # what was given up, newest last
    python -m services.jobs.admin dlq replay JOB_ID      # run a FAILED job again from its failed stage

Uses the same PIXMESH_* settings as the jobs service (NATS URL, database URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from google.protobuf import json_format

from services.jobs import deadletters
from services.jobs.app import MIGRATIONS
from services.jobs.repository import JobsRepository
from services.jobs.service import JobsService
from services.jobs.settings import JobsSettings
from services.runtime import db
from services.runtime.bus import Bus


@asynccontextmanager
async def _dead_letters(settings: JobsSettings) -> AsyncIterator[deadletters.DeadLetters]:
    """The service's own reader and replay, on connections of this command's."""
    bus = await Bus.connect(
        settings.nats_url, "pixmesh-jobs-admin", stream_replicas=settings.stream_replicas
    )
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool, "jobs", MIGRATIONS)
        repo = JobsRepository(pool, job_timeout_s=settings.job_timeout_s)
        yield deadletters.DeadLetters(bus.js, JobsService(repo, bus))
    finally:
        await pool.close()
        await bus.close()


async def dlq_list(settings: JobsSettings, limit: int) -> list[dict[str, object]]:
    """The newest `limit` dead letters, newest last."""
    async with _dead_letters(settings) as letters:
        return [deadletters.as_dict(m) for m in reversed(await letters.newest(limit))]


async def dlq_replay(settings: JobsSettings, job_id: str) -> dict[str, object]:
    async with _dead_letters(settings) as letters:
        job = await letters.replay(job_id)
        return json_format.MessageToDict(job, preserving_proto_field_name=True)


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
