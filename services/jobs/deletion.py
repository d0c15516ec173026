"""Deleting finished jobs, and which of their objects nothing references any more.

Outputs are content-addressed (input bytes + resolved spec + engine fingerprint): two jobs on the
same bytes, of one tenant or of two, may share an object. A deleted job's object keys are
therefore checked against every remaining job on the same source (stage 0's input key, indexed
by migration 0008): keys another job still lists are kept, and so is every key of a source on
which a job is still PENDING or RUNNING (its worker may find one of them stored and reuse it).
What is left is returned for the caller to delete from object storage. So are the deleted jobs'
sources that no remaining job reads (`released_sources`): the gateway deletes those that no
image has (a batch's objects taken from a storage prefix have none), since images are its own.

One transaction: the selected job rows are locked (FOR UPDATE) and deleted (stages and webhook
deliveries cascade) and the references read after the delete, so a concurrent deletion of the
other job sharing a key sees this one gone. Idempotent: a job deleted twice is not found, its
objects already gone or kept.

Left open (README, "Deletion"): a job created on the same source in the instant between this
check and the caller's object delete may find an object still stored, reuse it, and lose it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from services.jobs import errors
from services.jobs.mapping import stage_results
from services.runtime.errors import invalid

_OPEN = ("PENDING", "RUNNING")


@dataclass
class Deleted:
    jobs_deleted: int = 0
    jobs_running: int = 0
    unreferenced_keys: list[str] = field(default_factory=list)
    keys_kept: int = 0
    images_running: list[str] = field(default_factory=list)
    released_sources: list[str] = field(default_factory=list)


def _keys(row: asyncpg.Record) -> Iterable[str]:
    """The object keys a stage row made (one output shape: services/jobs/mapping.py)."""
    made = stage_results(row["output_key"], None, row["rendition_outputs"])
    return [m.key for m in made if m.key]


async def delete_jobs(
    pool: asyncpg.Pool,
    tenant_id: str,
    *,
    job_id: str = "",
    image_id: str = "",
    image_ids: Sequence[str] = (),
    finished_before: datetime | None = None,
    fail_if_running: bool = False,
    limit: int = 0,
) -> Deleted:
    """Delete the tenant's finished jobs of the selection; see the module docstring. With
    `finished_before` and `limit`, at most `limit` jobs, those finished first, skipping rows
    another transaction holds (a retention batch: a replica running the same pass, or a job
    being updated, is left for the next batch). With `image_ids` (several images, retention's
    batches) and `fail_if_running`, an image with a job still open keeps all its jobs and is
    listed in `images_running`; the other images' jobs go."""
    if not tenant_id:
        raise invalid("tenant_id", "required")
    if limit < 0:
        raise invalid("limit", "must not be negative")
    if image_ids and image_id:
        raise invalid("image_ids", "not with image_id")
    where: list[str] = ["tenant_id = $1"]
    args: list[object] = [tenant_id]
    for column, op, value in (
        ("job_id", "=", job_id),
        ("image_id", "=", image_id),
        ("finished_at", "<", finished_before),
    ):
        if value:  # one statement per selection, so each finds its index (no `$n = '' OR`)
            args.append(value)
            where.append(f"{column} {op} ${len(args)}")
    if image_ids:
        args.append(list(image_ids))
        where.append(f"image_id = ANY(${len(args)}::text[])")
    query = f"SELECT job_id, image_id, state FROM jobs.jobs WHERE {' AND '.join(where)}"
    if finished_before is not None and limit:
        args.append(limit)
        query += f" ORDER BY finished_at LIMIT ${len(args)} FOR UPDATE SKIP LOCKED"
    else:
        query += " FOR UPDATE"
    async with pool.acquire() as conn, conn.transaction():
        selected = await conn.fetch(query, *args)
        if job_id and not selected:
            raise errors.job_not_found(job_id)
        running = [r["job_id"] for r in selected if r["state"] in _OPEN]
        busy_images = sorted({r["image_id"] for r in selected if r["state"] in _OPEN})
        if fail_if_running and image_ids:
            # Per image: one with a job open keeps all its jobs, the others' jobs go.
            busy = set(busy_images)
            done = [
                r["job_id"]
                for r in selected
                if r["state"] not in _OPEN and r["image_id"] not in busy
            ]
        elif fail_if_running and running:
            return Deleted(jobs_running=len(running))
        else:
            busy_images = []
            done = [r["job_id"] for r in selected if r["state"] not in _OPEN]
        if not done:
            return Deleted(jobs_running=len(running), images_running=busy_images)
        stages = await conn.fetch(
            """SELECT s.job_id, s.idx, s.input_key, s.output_key, s.rendition_outputs
               FROM jobs.stages s WHERE s.job_id = ANY($1::text[]) ORDER BY s.job_id, s.idx""",
            done,
        )
        source_of = {r["job_id"]: r["input_key"] for r in stages if r["idx"] == 0}
        candidates: dict[str, str] = {}  # object key -> the source it was made from
        for r in stages:
            for key in _keys(r):
                candidates[key] = source_of.get(r["job_id"], "")
        await conn.execute("DELETE FROM jobs.jobs WHERE job_id = ANY($1::text[])", done)
        # Every deleted job's source (one without outputs too), for what others still read.
        sources = sorted({s for s in source_of.values() if s})
        others = await conn.fetch(
            """SELECT j.state, s.output_key, s.rendition_outputs, first.input_key AS source
               FROM jobs.stages first
               JOIN jobs.jobs j ON j.job_id = first.job_id
               JOIN jobs.stages s ON s.job_id = first.job_id
               WHERE first.idx = 0 AND first.input_key = ANY($1::text[])""",
            sources,
        )
        referenced: set[str] = set()
        busy_sources: set[str] = set()
        read = {r["source"] for r in others}
        for r in others:
            if r["state"] in _OPEN:
                busy_sources.add(r["source"])
            referenced.update(_keys(r))
        free = sorted(
            key
            for key, source in candidates.items()
            if key not in referenced and source not in busy_sources and source
        )
        return Deleted(
            jobs_deleted=len(done),
            jobs_running=len(running),
            unreferenced_keys=free,
            keys_kept=len(candidates) - len(free),
            images_running=busy_images,
            released_sources=[s for s in sources if s not in read],
        )
