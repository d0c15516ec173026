"""Batches (issue 12): one pipeline over many images, each image an ordinary job.

A batch is a parent row and one item row per image (jobs.batches, jobs.batch_items). Creating a
batch writes them only; its jobs are created by the feeder (`Batches.feed`), a loop every replica
runs, woken by the job events its replica applies (and looking every few seconds for what it
does not hear of), which holds a running batch under a short lease and, each round:

1. settles the items whose job ended: records the outputs (with their archive names), bytes
   and seconds, copies the outputs to the batch's destination when it has one;
2. creates jobs for the next queued items while there is room: at most `window` of the batch's
   jobs not yet started (so a batch never holds more than `window` pending tasks and never meets
   the gateway's QUEUE_FULL), and only while the first stage's task queue holds fewer than
   `lane_backlog` undelivered tasks (the lane: batches fill the workers' idle capacity, an
   interactive job finds at most that many batch tasks ahead of it);
3. ends the batch when nothing is queued or running, with its summary.

Items of a storage source are ingested when their turn comes (read, sniffed and probed without
decoding, stored content-addressed as inputs/<sha256>): nothing is copied before a worker can
take it. Bad files (not an image, corrupt header, too large) fail their item with the reason and
the rest proceed. A job is created with the idempotency key `batch:<batch id>:<index>`, so a
feeder that dies between creating the job and recording it finds the same job again, and with
its `batch_id`, which puts its tasks in the batch lane (the key plays no part in that: a
client's job keyed `batch:...` stays interactive).

Archive names are deterministic: the source's name (its path under the prefix, or the uploaded
file name) without its extension, then "/<rendition>" for renditions, then the output's extension.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import posixpath
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
from google.protobuf import json_format
from opentelemetry.instrumentation.utils import suppress_instrumentation

from pixmesh import summaries
from pixmesh.common.v1 import batch_pb2, image_pb2, job_pb2
from pixmesh.events.v1 import events_pb2
from pixmesh.jobs.v1 import batches_pb2
from services.jobs import mapping, webhooks
from services.jobs.connections import Bucket, ConnectionStore, tenant_area
from services.jobs.webhooks import WebhookPolicy
from services.runtime import metrics
from services.runtime.errors import (
    FailedPrecondition,
    NotFound,
    ServiceError,
    invalid,
)
from services.runtime.imageprobe import (
    EMPTY_IMAGE,
    UNSUPPORTED_FORMAT,
    ProbeLimits,
    extension_for,
    probe,
)
from services.runtime.pipeline import check_renditions, op_name, plan_stages
from services.runtime.storage import Storage, input_key

if TYPE_CHECKING:
    from services.jobs.service import JobsService

log = logging.getLogger(__name__)

QUEUED, SUBMITTED = "QUEUED", "SUBMITTED"
SUCCEEDED, FAILED, CANCELLED, RUNNING = "SUCCEEDED", "FAILED", "CANCELLED", "RUNNING"
_TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
# Per failure reason, the files a summary names (the full list: ListBatchJobs state FAILED).
SUMMARY_NAMES = 1000
MAX_IMAGE_IDS = 10_000
# The idempotency key of a batch's job: `batch:<batch id>:<index>` (dedup of the feeder only).
BATCH_KEY_PREFIX = "batch:"
# Batch webhooks a feeder round posts, at most (a full page: it goes round again at once).
_WEBHOOKS_PER_ROUND = 8


# Undelivered tasks on a worker service's queue ("imaging", ...).
Backlog = Callable[[str], Awaitable[int]]


@dataclass(frozen=True)
class BatchPolicy:
    # Jobs of one batch created but not started, at most.
    window: int = 16
    # Jobs of one batch not yet ended, at most (started ones included).
    max_open: int = 64
    # Batch jobs are created only while the first stage's queue holds fewer undelivered tasks.
    lane_backlog: int = 1
    max_items: int = 100_000
    lease_s: float = 30.0
    # While a batch runs, the feeder is woken by what changes it here: a job event applied by
    # this replica (`task_event`), a batch created or ended here. `resync_s` is how soon it
    # looks again when nothing woke it: the safety net for what this replica does not hear of
    # (another replica's job events, a retryable failure).
    resync_s: float = 2.0
    # How soon it looks again when a wake-up found the batch held by another replica (whose
    # round may have begun before the change that woke this one); and how far apart rounds
    # begin at least: the job events during a round or this soon after it begin one round
    # (every job's events wake the feeder while a batch runs, interactive ones included).
    tick_s: float = 0.1
    # How soon the feeder looks again when no batch runs and it posted no webhook (idle):
    # a batch created or ended on this replica wakes it at once, one created on another
    # replica waits this long at most (or for that replica's feeder).
    idle_s: float = 1.0
    # How long a read of a lane's backlog is used (with the tasks submitted since added); a
    # job event applied here makes it stale at once (a worker took a task or freed a slot).
    backlog_ttl_s: float = 1.0
    # WatchBatch: a look at the batch when this replica's feeder changed it, at most one every
    # `watch_s` (at once when it ended), and one every `watch_resync_s` when nothing here
    # changed it (another replica fed it).
    watch_s: float = 1.0
    watch_resync_s: float = 5.0
    # Running batches fed concurrently by one replica.
    batches_per_round: int = 8
    max_renditions: int = 10
    limits: ProbeLimits = field(default_factory=lambda: ProbeLimits(50 * 2**20, 50_000_000, 100))


def archive_name(source_name: str, rendition: str, fmt: int) -> str:
    stem, _ = posixpath.splitext(source_name)
    stem = stem or source_name or "image"
    ext = extension_for(fmt)  # type: ignore[arg-type]
    return f"{stem}/{rendition}.{ext}" if rendition else f"{stem}.{ext}"


def _unique_names(names: Sequence[str]) -> list[str]:
    """Names made unique (a repeated name gets "~<index>" before its extension)."""
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name in seen:
            stem, ext = posixpath.splitext(name)
            name = f"{stem}~{i}{ext}"
        seen.add(name)
        out.append(name)
    return out


def batch_not_found(batch_id: str) -> NotFound:
    return NotFound(message=f"batch {batch_id} not found", reason="BATCH_NOT_FOUND")


@dataclass
class _Watch:
    """The WatchBatch streams of one batch on this replica: `changed` is set when the feeder
    changed the batch here, `ended` when it ended here."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    streams: int = 0


@dataclass(frozen=True)
class Round:
    """What a feeder round found: whether it did work, whether it held a batch, whether a
    running batch was held by another replica, and whether it left work for the next round at
    once (a full page of webhooks or of batches)."""

    worked: bool
    held: bool
    elsewhere: bool = False
    more: bool = False


@dataclass(frozen=True)
class _Open:
    """A running batch's items when it was claimed: submitted ones (`open`), of which `pending`
    have a job not started and `ended` one that ended (to settle), and whether any is queued."""

    open: int
    pending: int
    ended: int
    queued: bool


@dataclass(frozen=True)
class _Claimed:
    batch_id: str
    tenant_id: str
    source: batch_pb2.StorageLocation | None
    destination: batch_pb2.StorageLocation | None
    pipeline: job_pb2.Job
    # None: not read (a batch being stopped).
    items: _Open | None = None


_BATCH_COLUMNS = """batch_id, tenant_id, state, source, destination, pipeline, idempotency_key,
    request_hash, webhook_url, total, summary, error_code, error_reason, error_message,
    created_at, updated_at, finished_at"""

# Counts of a batch's items by state (a submitted item by its job's state), with bytes.
_PROGRESS = """SELECT CASE WHEN i.state = 'SUBMITTED' THEN coalesce(j.state, 'PENDING')
                          ELSE i.state END AS state,
           count(*) AS n,
           coalesce(sum(i.size_bytes) FILTER (WHERE i.state IN ('SUCCEEDED', 'FAILED')), 0)::bigint
               AS bytes_in,
           coalesce(sum(i.bytes_out), 0)::bigint AS bytes_out
    FROM jobs.batch_items i LEFT JOIN jobs.jobs j ON j.job_id = i.job_id AND i.state = 'SUBMITTED'
    WHERE i.batch_id = $1 GROUP BY 1"""


class Batches:
    def __init__(
        self,
        pool: asyncpg.Pool,
        jobs: JobsService,
        platform: Storage,
        platform_bucket: Bucket,
        connections: ConnectionStore,
        backlog: Backlog | None = None,
        policy: BatchPolicy = BatchPolicy(),
        webhooks: tuple[WebhookPolicy, httpx.AsyncClient] | None = None,
    ) -> None:
        # The deployment's webhook policy and the client that posts (None: no batch webhooks).
        self.webhooks = webhooks
        self.pool = pool
        self.jobs = jobs
        self.platform = platform
        self.platform_bucket = platform_bucket
        self.connections = connections
        self.backlog = backlog
        self.policy = policy
        # Set when this replica creates a batch or ends one (its webhook is due), or applies a
        # job event while a batch runs: wakes the feeder.
        self._wake = asyncio.Event()
        # Whether a batch ran at the feeder's last round (here or on another replica): job
        # events wake the feeder only then.
        self._running = True
        # Per worker service, the lane's backlog when it was read (time.monotonic()) plus the
        # tasks submitted since.
        self._backlogs: dict[str, tuple[int, float]] = {}
        # Counts the job events applied here: a read that one overtook is not kept.
        self._events = 0
        # WatchBatch streams on this replica, by batch.
        self._watches: dict[str, _Watch] = {}

    def task_event(self, event: events_pb2.TaskEvent) -> None:
        """A job event was applied here (services/jobs/consumers.py): wake the feeder if a batch
        runs (the event does not say whether its job is a batch's; a round costs two statements
        when it is not), and read the lanes' backlog again (a worker took a task, or freed a
        slot and takes the next one)."""
        self._events += 1
        self._backlogs.clear()
        if self._running:
            self._wake.set()

    def _changed(self, batch_id: str, *, ended: bool = False) -> None:
        """Tell this replica's WatchBatch streams of `batch_id` that it changed (or ended)."""
        watch = self._watches.get(batch_id)
        if watch is not None:
            watch.ended = watch.ended or ended
            watch.changed.set()

    # ---- commands -------------------------------------------------------------------------

    async def create(self, req: batches_pb2.CreateBatchRequest) -> tuple[batch_pb2.Batch, bool]:
        tenant = req.tenant_id
        if not tenant:
            raise invalid("tenant_id", "required")
        if not req.operations and not req.renditions:
            raise invalid("operations", "at least one operation (or rendition) is required")
        for i, op in enumerate(req.operations):
            op_name(op, i)
        check_renditions(req.renditions, self.policy.max_renditions)
        if req.HasField("webhook") and not req.webhook.url:
            raise invalid("webhook.url", "required with a webhook")
        has_source = req.HasField("source")
        if bool(req.images) == has_source:
            raise invalid("source", "either a list of images or a storage location")
        if len(req.images) > MAX_IMAGE_IDS:
            raise invalid("source.images", f"at most {MAX_IMAGE_IDS} images per batch")
        req_hash = req.request_hash or _request_hash(req)
        if req.idempotency_key:
            existing = await self._by_key(tenant, req.idempotency_key, req_hash)
            if existing is not None:
                return existing, False
        if req.HasField("destination"):
            # Refused now if the destination cannot be listed with its credentials.
            await (await self._bucket(tenant, req.destination)).check()
        items: list[tuple[str, bytes | None, str | None, int]]
        if has_source:
            items = await self._list_source(tenant, req.source)
        else:
            names = [
                (req.names[i] if i < len(req.names) and req.names[i] else "")
                or img.filename
                or img.image_id
                for i, img in enumerate(req.images)
            ]
            items = [
                (name, img.SerializeToString(), None, int(img.size_bytes))
                for name, img in zip(_unique_names(names), req.images, strict=True)
            ]
        batch_id = f"bat_{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        pipeline = job_pb2.Job(operations=req.operations, renditions=req.renditions)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO jobs.batches (batch_id, tenant_id, state, source, destination,
                        pipeline, idempotency_key, request_hash, webhook_url, webhook_secret,
                        total, created_at, updated_at)
                    VALUES ($1, $2, 'RUNNING', $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)""",
                    batch_id,
                    tenant,
                    req.source.SerializeToString() if has_source else None,
                    req.destination.SerializeToString() if req.HasField("destination") else None,
                    pipeline.SerializeToString(),
                    req.idempotency_key or None,
                    req_hash,
                    req.webhook.url if req.HasField("webhook") else None,
                    self.connections.secrets.seal(req.webhook.secret or None)
                    if req.HasField("webhook")
                    else None,
                    len(items),
                    now,
                )
                for start in range(0, len(items), 1000):
                    chunk = items[start : start + 1000]
                    await conn.execute(
                        """INSERT INTO jobs.batch_items (batch_id, idx, name, image, object_key,
                            size_bytes)
                        SELECT $1, v.idx, v.name, v.image, v.key, v.size
                        FROM unnest($2::int[], $3::text[], $4::bytea[], $5::text[], $6::bigint[])
                            AS v(idx, name, image, key, size)""",
                        batch_id,
                        list(range(start, start + len(chunk))),
                        [c[0] for c in chunk],
                        [c[1] for c in chunk],
                        [c[2] for c in chunk],
                        [c[3] for c in chunk],
                    )
        except asyncpg.UniqueViolationError:
            existing = await self._by_key(tenant, req.idempotency_key, req_hash)
            if existing is None:
                raise
            return existing, False
        self._wake.set()
        return await self.get(tenant, batch_id), True

    async def _list_source(
        self, tenant: str, source: batch_pb2.StorageLocation
    ) -> list[tuple[str, bytes | None, str | None, int]]:
        bucket = await self._bucket(tenant, source)
        if source.connection_id:
            await bucket.check()
        prefix = self._prefix(tenant, source)
        items: list[tuple[str, bytes | None, str | None, int]] = []
        async for obj in bucket.list(prefix):
            name = obj.key[len(prefix) :].lstrip("/") or posixpath.basename(obj.key)
            items.append((name, None, obj.key, obj.size))
            if len(items) > self.policy.max_items:
                raise invalid("source.storage.prefix", f"more than {self.policy.max_items} objects")
        if not items:
            raise FailedPrecondition(
                message=f"no objects under the prefix {source.prefix!r}",
                reason="SOURCE_EMPTY",
            )
        return items

    def _prefix(self, tenant: str, loc: batch_pb2.StorageLocation) -> str:
        if loc.connection_id:
            return loc.prefix
        return tenant_area(tenant) + loc.prefix.lstrip("/")

    async def _bucket(self, tenant: str, loc: batch_pb2.StorageLocation) -> Bucket:
        if not loc.connection_id:
            return self.platform_bucket
        return await (await self.connections.get(tenant, loc.connection_id)).open()

    async def cancel(self, tenant: str, batch_id: str) -> batch_pb2.Batch:
        await self._stop(tenant, batch_id, CANCELLED)
        return await self.get(tenant, batch_id)

    async def _stop(
        self, tenant: str, batch_id: str, state: str, error: ServiceError | None = None
    ) -> None:
        """End a running batch now (CANCELLED by its owner, FAILED when its source became
        unusable): no queued item ever gets a job, its open jobs are cancelled (those that
        ended keep their outcome), and it ends with its summary. One transaction holds the
        batch row from the first statement to the last: readers see it running until it has
        ended with its summary (never ended without one), and the feeder skips it meanwhile."""
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT state FROM jobs.batches WHERE tenant_id=$1 AND batch_id=$2 FOR UPDATE",
                tenant,
                batch_id,
            )
            if current is None:
                raise batch_not_found(batch_id)
            if current == RUNNING:
                # From now on the feeder leaves it alone.
                await conn.execute(
                    """UPDATE jobs.batches SET state=$2, updated_at=now(), finished_at=now(),
                        error_code=$3, error_reason=$4, error_message=$5 WHERE batch_id=$1""",
                    batch_id,
                    state,
                    error.code.name if error else None,
                    error.reason if error else None,
                    error.message if error else None,
                )
                await conn.execute(
                    """UPDATE jobs.batch_items SET state='CANCELLED'
                    WHERE batch_id=$1 AND state='QUEUED'""",
                    batch_id,
                )
            elif current != state:
                raise FailedPrecondition(
                    message=f"batch {batch_id} is already {current}", reason="BATCH_FINISHED"
                )
            # The jobs and items below are other rows, written on other connections: nothing
            # here waits on them, nor they on this transaction (a feeder creating a job for an
            # item cancelled above waits for the commit, then finds the item cancelled).
            open_jobs = await conn.fetch(
                """SELECT i.idx, i.job_id FROM jobs.batch_items i JOIN jobs.jobs j USING (job_id)
                WHERE i.batch_id=$1 AND i.state='SUBMITTED'""",
                batch_id,
            )
            for row in open_jobs:
                with contextlib.suppress(FailedPrecondition):
                    await self.jobs.cancel_job(tenant, row["job_id"])
            claimed = _Claimed(batch_id, tenant, None, None, job_pb2.Job())
            await self._settle(claimed, copy=False)
            # On this connection: it holds the batch row, and sees the items it cancelled.
            await self._finish(batch_id, state, conn)
        # Committed: a stream that looks now sees it ended.
        self._changed(batch_id, ended=True)

    # ---- queries --------------------------------------------------------------------------

    async def get(self, tenant: str, batch_id: str) -> batch_pb2.Batch:
        row = await self.pool.fetchrow(
            f"SELECT {_BATCH_COLUMNS} FROM jobs.batches WHERE tenant_id=$1 AND batch_id=$2",
            tenant,
            batch_id,
        )
        if row is None:
            raise batch_not_found(batch_id)
        return await self._proto(row)

    async def list_batches(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[batch_pb2.Batch], str]:
        page_size = min(page_size or 20, 100)
        args: list[Any] = [tenant, page_size + 1]
        where = "tenant_id=$1"
        if page_token:
            created, last = _decode_token(page_token)
            args += [created, last]
            where += " AND (created_at, batch_id) < ($3, $4)"
        rows = await self.pool.fetch(
            f"""SELECT {_BATCH_COLUMNS} FROM jobs.batches WHERE {where}
            ORDER BY created_at DESC, batch_id DESC LIMIT $2""",
            *args,
        )
        token = ""
        if len(rows) > page_size:
            last_row = rows[page_size - 1]
            token = _encode_token(last_row["created_at"], last_row["batch_id"])
        return [await self._proto(r) for r in rows[:page_size]], token

    async def watch(self, tenant: str, batch_id: str) -> AsyncIterator[batch_pb2.Batch]:
        """The batch now, then on every change of its progress, until it ended. It is read
        again when this replica's feeder changed it, at most every `watch_s` (at once when it
        ended: the stream's last message is not held back), and every `watch_resync_s` when
        nothing here changed it (another replica's feeder did). It used to be read every
        second whatever happened."""
        watch = self._watches.setdefault(batch_id, _Watch())
        watch.streams += 1
        try:
            last = b""
            while True:
                # Cleared before the read: a change after this point wakes the next wait.
                watch.changed.clear()
                batch = await self.get(tenant, batch_id)
                looked = time.monotonic()
                seen = batch.progress.SerializeToString() + bytes([batch.state])
                if seen != last:
                    last = seen
                    yield batch
                if batch.state != batch_pb2.Batch.RUNNING:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.policy.watch_resync_s):
                        await watch.changed.wait()
                        if not watch.ended:
                            await asyncio.sleep(looked + self.policy.watch_s - time.monotonic())
        finally:
            watch.streams -= 1
            if not watch.streams:
                self._watches.pop(batch_id, None)

    async def items(
        self, tenant: str, batch_id: str, page_size: int, page_token: str, state: int
    ) -> tuple[list[batch_pb2.BatchItem], str]:
        await self._owned(tenant, batch_id)
        page_size = min(page_size or 100, 1000)
        start = _item_token(page_token)
        where = "i.batch_id = $1 AND i.idx >= $2"
        args: list[Any] = [batch_id, start, page_size + 1]
        if state:
            name = job_pb2.Job.State.Name(state)  # type: ignore[arg-type]
            args.append(name)
            # An item's state is its job's while it runs (queued ones count as PENDING).
            where += """ AND (CASE WHEN i.state = 'QUEUED' THEN 'PENDING'
                                  WHEN i.state = 'SUBMITTED' THEN coalesce(j.state, 'PENDING')
                                  ELSE i.state END) = $4"""
        rows = await self.pool.fetch(
            f"""SELECT i.*, j.state AS job_state FROM jobs.batch_items i
            LEFT JOIN jobs.jobs j ON j.job_id = i.job_id
            WHERE {where} ORDER BY i.idx LIMIT $3""",
            *args,
        )
        token = str(rows[page_size]["idx"]) if len(rows) > page_size else ""
        items = [_item(r) for r in rows[:page_size]]
        # A succeeded item carries its job's outputs: recorded when the feeder settled it, read
        # from the job when it succeeded since (or was settled before they were recorded).
        unread = [
            item
            for item, r in zip(items, rows, strict=False)
            if item.state == job_pb2.Job.SUCCEEDED and r["job_outputs"] is None and item.job_id
        ]
        jobs = await asyncio.gather(*(self.jobs.get_job(tenant, i.job_id) for i in unread))
        for item, job in zip(unread, jobs, strict=True):
            item.outputs.extend(job.outputs)
        return items, token

    async def archive_entries(self, tenant: str, batch_id: str) -> list[batch_pb2.ArchiveEntry]:
        await self._owned(tenant, batch_id)
        rows = await self.pool.fetch(
            """SELECT name, state, outputs FROM jobs.batch_items WHERE batch_id=$1 ORDER BY idx""",
            batch_id,
        )
        # Sources that differ only by their extension (photo.jpg, photo.png) keep it
        # (photo.jpg.webp, photo.png.webp), as `pixmesh batch DIR` names them: their outputs'
        # names were the same and one member overwrote the other when extracted. Counted over
        # every item, so a member's name does not change as the batch goes on.
        stems = Counter(posixpath.splitext(r["name"])[0] for r in rows)
        entries: list[batch_pb2.ArchiveEntry] = []
        for r in rows:
            if r["state"] != "SUCCEEDED" or r["outputs"] is None:
                continue
            own = batches_pb2.ListArchiveEntriesResponse.FromString(r["outputs"]).entries
            stem = posixpath.splitext(r["name"])[0]
            if stem and stems[stem] > 1:
                for entry in own:
                    if entry.name.startswith(stem):
                        entry.name = r["name"] + entry.name[len(stem) :]
            entries.extend(own)
        return entries

    async def job_archive_entries(self, tenant: str, job_id: str) -> list[batch_pb2.ArchiveEntry]:
        job, outputs = await self._read_job(tenant, job_id)
        if job.state != job_pb2.Job.SUCCEEDED:
            raise FailedPrecondition(
                message=f"job {job_id} has not succeeded", reason="JOB_NOT_SUCCEEDED"
            )
        row = await self.pool.fetchval(
            "SELECT source FROM jobs.jobs WHERE job_id=$1 AND tenant_id=$2", job_id, tenant
        )
        image = image_pb2.Image.FromString(row or b"")
        return _entries(outputs, image.filename or job.image_id)

    async def _read_job(
        self, tenant: str, job_id: str
    ) -> tuple[job_pb2.Job, list[tuple[job_pb2.Output, str]]]:
        """A job and its outputs with their object keys, in one read of it (GetJob and then a
        GetOutput per output read it once each)."""
        record = await self.jobs.repo.get(tenant, job_id)
        return mapping.job_proto(record), mapping.outputs(record)

    async def _owned(self, tenant: str, batch_id: str) -> None:
        found = await self.pool.fetchval(
            "SELECT 1 FROM jobs.batches WHERE tenant_id=$1 AND batch_id=$2", tenant, batch_id
        )
        if found is None:
            raise batch_not_found(batch_id)

    async def _by_key(self, tenant: str, key: str, req_hash: str) -> batch_pb2.Batch | None:
        row = await self.pool.fetchrow(
            f"SELECT {_BATCH_COLUMNS} FROM jobs.batches WHERE tenant_id=$1 AND idempotency_key=$2",
            tenant,
            key,
        )
        if row is None:
            return None
        if row["request_hash"] != req_hash:
            raise FailedPrecondition(
                message="idempotency key was already used with a different request",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return await self._proto(row)

    async def _proto(self, row: asyncpg.Record) -> batch_pb2.Batch:
        b = batch_pb2.Batch(
            batch_id=row["batch_id"],
            state=batch_pb2.Batch.State.Value(row["state"]),
            idempotency_key=row["idempotency_key"] or "",
            webhook_url=row["webhook_url"] or "",
        )
        if row["source"] is not None:
            b.source.MergeFromString(row["source"])
        if row["destination"] is not None:
            b.destination.MergeFromString(row["destination"])
        pipeline = job_pb2.Job.FromString(row["pipeline"])
        b.operations.extend(pipeline.operations)
        b.renditions.extend(pipeline.renditions)
        if row["summary"] is not None:
            b.summary.MergeFromString(row["summary"])
        if row["error_code"]:
            b.error.code = row["error_code"]
            b.error.reason = row["error_reason"] or ""
            b.error.message = row["error_message"] or ""
        b.created_at.FromDatetime(row["created_at"])
        b.updated_at.FromDatetime(row["updated_at"])
        if row["finished_at"] is not None:
            b.finished_at.FromDatetime(row["finished_at"])
        await self._progress(row, b.progress)
        return b

    async def _progress(self, row: asyncpg.Record, p: batch_pb2.BatchProgress) -> None:
        p.total = row["total"]
        for r in await self.pool.fetch(_PROGRESS, row["batch_id"]):
            state = r["state"].lower()
            setattr(p, state, getattr(p, state) + r["n"])
            p.bytes_in += r["bytes_in"]
            p.bytes_out += r["bytes_out"]
        end = row["finished_at"] or datetime.now(UTC)
        elapsed = max((end - row["created_at"]).total_seconds(), 1e-6)
        done = p.succeeded + p.failed + p.cancelled
        p.images_per_second = done / elapsed
        p.input_megabytes_per_second = p.bytes_in / 1e6 / elapsed
        left = p.total - done
        if row["finished_at"] is None and done and p.images_per_second > 0:
            p.eta_seconds = left / p.images_per_second

    # ---- the feeder -----------------------------------------------------------------------

    async def feed(self, stop: asyncio.Event) -> None:
        """Every replica runs this; a batch is fed by one replica at a time (its lease).
        A round runs when something woke the feeder: a job event applied here while a batch
        runs (`task_event`), a batch created or ended here, stopping; rounds begin `tick_s`
        apart at least (a burst of events is one round). Otherwise every `resync_s` while a
        batch runs (what this replica does not hear of: another replica's job events, a
        retryable failure), `tick_s` after a wake-up that found the batch held by another
        replica, and every `idle_s` when none runs. (Until issue 12's seventh pass a replica
        holding a batch looked every 0.1 s: ~10 rounds a second, each reading the lane's
        backlog from JetStream, whatever happened.)"""
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())
        # A wake-up not yet answered by a round that held the batches: until one did, another
        # replica's round may have begun before the change that woke this one.
        unanswered = False
        began = -self.policy.tick_s
        try:
            while True:
                await asyncio.sleep(began + self.policy.tick_s - time.monotonic())
                if stop.is_set():
                    break
                began = time.monotonic()
                # Cleared before the round: a batch created or a job event during it wakes the
                # next wait.
                unanswered = unanswered or self._wake.is_set()
                self._wake.clear()
                try:
                    with suppress_instrumentation():
                        found = await self._round()
                except Exception:
                    log.exception("batch feeder round failed; retrying")
                    found = Round(worked=False, held=True)
                if found.held or not found.elsewhere:
                    unanswered = False
                if found.more or self._wake.is_set():
                    continue
                if found.held:
                    wait = self.policy.resync_s
                elif found.elsewhere:
                    wait = self.policy.tick_s if unanswered else self.policy.resync_s
                else:
                    wait = self.policy.idle_s
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            stopping.cancel()

    async def _round(self) -> Round:
        """One round over the running batches this replica could lease, and the webhooks of
        batches that ended."""
        posted = await self.deliver_webhooks() if self.webhooks is not None else 0
        found = await self._feed_batches()
        self._running = found.held or found.elsewhere
        return Round(
            worked=found.worked or posted > 0,
            held=found.held,
            elsewhere=found.elsewhere,
            more=found.more or posted >= _WEBHOOKS_PER_ROUND,
        )

    async def deliver_webhooks(self) -> int:
        """Post the due webhooks of ended batches (claimed SKIP LOCKED and leased past the
        attempt's timeout, so one replica posts each; retried with the jobs' backoff)."""
        assert self.webhooks is not None
        policy, client = self.webhooks
        rows = await self.pool.fetch(
            """UPDATE jobs.batches b SET webhook_attempts = b.webhook_attempts + 1,
                webhook_next_at = now() + make_interval(secs => $1)
            FROM (SELECT batch_id FROM jobs.batches
                  WHERE webhook_state = 'PENDING' AND webhook_next_at <= now()
                  ORDER BY webhook_next_at LIMIT $2 FOR UPDATE SKIP LOCKED) due
            WHERE b.batch_id = due.batch_id
            RETURNING b.batch_id, b.tenant_id, b.webhook_url, b.webhook_secret,
                b.webhook_attempts""",
            policy.timeout_s + 30.0,
            _WEBHOOKS_PER_ROUND,
        )
        await asyncio.gather(*(self._post(policy, client, r) for r in rows))
        return len(rows)

    async def _post(self, policy: WebhookPolicy, client: httpx.AsyncClient, row: Any) -> None:
        batch = await self.get(row["tenant_id"], row["batch_id"])
        event_id = f"{batch.batch_id}.{row['webhook_attempts']}"
        body = json.dumps(
            {
                "event_id": event_id,
                "type": "batch." + batch_pb2.Batch.State.Name(batch.state).lower(),
                "batch": json_format.MessageToDict(batch, preserving_proto_field_name=True),
            },
            separators=(",", ":"),
        ).encode()
        secret = self.connections.secrets.open(row["webhook_secret"]) or policy.secret
        hdrs = webhooks.headers(event_id, body, secret)
        refused, address = await webhooks.checked_address(row["webhook_url"], policy.allow_private)
        error = refused
        if refused is None:
            _, error = await webhooks.post(
                client, row["webhook_url"], body, hdrs, policy.timeout_s, address
            )
        attempt = int(row["webhook_attempts"])
        retry = error is not None and attempt < policy.max_attempts
        await self.pool.execute(
            """UPDATE jobs.batches SET webhook_state = $2, webhook_last_error = $3,
                webhook_next_at = now() + make_interval(secs => $4)
            WHERE batch_id = $1""",
            row["batch_id"],
            "DELIVERED" if error is None else ("PENDING" if retry else "FAILED"),
            error,
            webhooks.backoff_s(attempt, policy.backoff_s, policy.backoff_max_s) if retry else 0.0,
        )

    async def _feed_batches(self) -> Round:
        """Step the running batches this replica could lease."""
        # With each batch, its items as the round needs them (one statement, where reading them
        # apart cost three a round), and how many batches run (whether another replica holds
        # one: a row of NULLs then when none was leased here).
        rows = await self.pool.fetch(
            """WITH due AS (
                SELECT batch_id FROM jobs.batches
                WHERE state = 'RUNNING' AND lease_until < now()
                ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE jobs.batches b SET lease_until = now() + make_interval(secs => $1)
                FROM due, LATERAL (
                    SELECT count(*) AS open,
                        count(*) FILTER (WHERE j.state = 'PENDING') AS pending,
                        count(*) FILTER (WHERE j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED'))
                            AS ended,
                        EXISTS (SELECT 1 FROM jobs.batch_items q
                                WHERE q.batch_id = due.batch_id AND q.state = 'QUEUED') AS queued
                    FROM jobs.batch_items i LEFT JOIN jobs.jobs j ON j.job_id = i.job_id
                    WHERE i.batch_id = due.batch_id AND i.state = 'SUBMITTED') items
                WHERE b.batch_id = due.batch_id
                RETURNING b.batch_id, b.tenant_id, b.source, b.destination, b.pipeline,
                    items.open, items.pending, items.ended, items.queued
            )
            SELECT c.*, r.running
            FROM (SELECT count(*) AS running FROM jobs.batches WHERE state = 'RUNNING') r
                LEFT JOIN claimed c ON true""",
            self.policy.lease_s,
            self.policy.batches_per_round,
        )
        running = rows[0]["running"] if rows else 0
        claimed = [
            _Claimed(
                r["batch_id"],
                r["tenant_id"],
                batch_pb2.StorageLocation.FromString(r["source"]) if r["source"] else None,
                batch_pb2.StorageLocation.FromString(r["destination"])
                if r["destination"]
                else None,
                job_pb2.Job.FromString(r["pipeline"]),
                _Open(r["open"], r["pending"], r["ended"], r["queued"]),
            )
            for r in rows
            if r["batch_id"] is not None
        ]
        results = await asyncio.gather(*(self._step(c) for c in claimed), return_exceptions=True)
        for c, result in zip(claimed, results, strict=True):
            if isinstance(result, BaseException):
                log.error("batch step failed", extra={"batch_id": c.batch_id}, exc_info=result)
            elif result:
                self._changed(c.batch_id)
        # Released: due again next round, here or on another replica.
        if claimed:
            await self.pool.execute(
                "UPDATE jobs.batches SET lease_until = '-infinity' WHERE batch_id = ANY($1)",
                [c.batch_id for c in claimed],
            )
        worked = any(r is True for r in results)
        return Round(
            worked=worked,
            held=bool(claimed),
            elsewhere=running > len(claimed),
            # A full page of batches, some of which had work: others may wait their turn.
            more=worked and len(claimed) >= self.policy.batches_per_round,
        )

    async def _step(self, batch: _Claimed) -> bool:
        items = batch.items
        assert items is not None
        try:
            settled = await self._settle(batch, copy=True) if items.ended else 0
            # Those settled are no longer open.
            submitted = (
                await self._submit(batch, items.pending, items.open - settled)
                if items.queued
                else 0
            )
        except ServiceError as exc:
            if exc.retryable:
                raise
            # The source or destination is gone for good (its connection deleted, the bucket
            # refused): the batch fails with the reason instead of retrying forever.
            log.warning("batch failed", extra={"batch_id": batch.batch_id, "error": str(exc)})
            await self._stop(batch.tenant_id, batch.batch_id, FAILED, exc)
            return True
        # Nothing was queued and every submitted item's job had ended when the batch was
        # claimed: all of them were settled above (a job does not leave an end state), so
        # nothing is queued or running now.
        if not items.queued and items.open == items.ended:
            if batch.source is not None and await self._no_images(batch.batch_id):
                # Every object was empty or not an image: a clear error, not an empty success
                # (each object is still listed in the summary with its reason).
                no_images = FailedPrecondition(
                    message=f"no images under the prefix {batch.source.prefix!r}: every object "
                    "is empty or not an image pixmesh reads (the summary lists them)",
                    reason="SOURCE_HAS_NO_IMAGES",
                )
                await self._stop(batch.tenant_id, batch.batch_id, FAILED, no_images)
            else:
                await self._finish(batch.batch_id, SUCCEEDED)
            return True
        return settled + submitted > 0

    async def _no_images(self, batch_id: str) -> bool:
        """True when no item of the batch was an image: none got a job, every one failed as
        empty or not an image."""
        found = await self.pool.fetchval(
            """SELECT EXISTS (SELECT 1 FROM jobs.batch_items WHERE batch_id = $1
                AND (job_id IS NOT NULL OR coalesce(error_reason, '') NOT IN ($2, $3)))""",
            batch_id,
            EMPTY_IMAGE,
            UNSUPPORTED_FORMAT,
        )
        return not found

    async def _submit(self, batch: _Claimed, pending: int, open_jobs: int) -> int:
        room = min(self.policy.window - pending, self.policy.max_open - open_jobs)
        if room <= 0:
            return 0
        service = ""
        if self.backlog is not None:
            service = plan_stages(batch.pipeline.operations, batch.pipeline.renditions)[0].service
            room = min(room, self.policy.lane_backlog - await self._lane_backlog(service))
            if room <= 0:
                return 0
        rows = await self.pool.fetch(
            """SELECT idx, name, image, object_key, size_bytes FROM jobs.batch_items
            WHERE batch_id = $1 AND state = 'QUEUED' ORDER BY idx LIMIT $2""",
            batch.batch_id,
            room,
        )
        bucket = (
            await self._bucket(batch.tenant_id, batch.source)
            if batch.source is not None
            else self.platform_bucket
        )
        # Counted as waiting on the lane until the backlog is read again (each row gets a job
        # or fails; a job's task is published by the outbox relay once it is committed).
        if service in self._backlogs:
            waiting, read_at = self._backlogs[service]
            self._backlogs[service] = (waiting + len(rows), read_at)
        await asyncio.gather(*(self._submit_one(batch, bucket, r) for r in rows))
        return len(rows)

    async def _lane_backlog(self, service: str) -> int:
        """The undelivered tasks of `service`'s batch lane: read from JetStream (a consumer
        info), or as read less than `backlog_ttl_s` ago with the tasks submitted since, unless
        a job event applied here made that stale (`task_event`)."""
        assert self.backlog is not None
        cached = self._backlogs.get(service)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.policy.backlog_ttl_s:
            return cached[0]
        events = self._events
        waiting = await self.backlog(service)
        if events == self._events:
            self._backlogs[service] = (waiting, now)
        return waiting

    async def _submit_one(self, batch: _Claimed, bucket: Bucket, row: asyncpg.Record) -> None:
        idx = row["idx"]
        try:
            if row["image"] is not None:
                image = image_pb2.Image.FromString(row["image"])
            elif (row["size_bytes"] or 0) > self.policy.limits.max_bytes:
                # Too large by the listing: refused without reading it.
                raise FailedPrecondition(
                    message=f"{row['size_bytes']} bytes; an input may have at most "
                    f"{self.policy.limits.max_bytes}",
                    reason="IMAGE_TOO_LARGE",
                )
            else:
                image = await self._ingest(bucket, row["object_key"], row["name"])
            job, _ = await self.jobs.create_job(
                batch.tenant_id,
                image,
                batch.pipeline.operations,
                f"{BATCH_KEY_PREFIX}{batch.batch_id}:{idx}",
                renditions=batch.pipeline.renditions,
                batch_id=batch.batch_id,
            )
        except ServiceError as exc:
            if exc.retryable:
                log.warning(
                    "batch item not submitted; retrying",
                    extra={"batch_id": batch.batch_id, "idx": idx, "error": str(exc)},
                )
                return
            await self.pool.execute(
                """UPDATE jobs.batch_items SET state='FAILED', error_reason=$3, error_message=$4
                WHERE batch_id=$1 AND idx=$2 AND state='QUEUED'""",
                batch.batch_id,
                idx,
                exc.reason,
                exc.message,
            )
            return
        done = await self.pool.execute(
            """UPDATE jobs.batch_items SET state='SUBMITTED', job_id=$3, size_bytes=$4
            WHERE batch_id=$1 AND idx=$2 AND state='QUEUED'""",
            batch.batch_id,
            idx,
            job.job_id,
            int(image.size_bytes),
        )
        if done.endswith(" 0"):
            # The batch was cancelled while this job was being created: it must not run.
            with contextlib.suppress(FailedPrecondition):
                await self.jobs.cancel_job(batch.tenant_id, job.job_id)

    async def _ingest(self, bucket: Bucket, key: str, name: str) -> image_pb2.Image:
        """An object of a storage source as an input: probed without decoding, stored
        content-addressed (once: the same bytes are stored by the first batch or upload)."""
        limits = self.policy.limits
        data = await bucket.read(key, limits.max_bytes)
        header = await asyncio.to_thread(probe, data, limits)
        sha = hashlib.sha256(data).hexdigest()
        if not await self.platform.exists(input_key(sha)):
            await self.platform.put(input_key(sha), data, header.mime_type)
        image = image_pb2.Image(
            image_id=f"img_{uuid.uuid4().hex}",
            format=header.format,
            width=header.width,
            height=header.height,
            frame_count=header.frame_count,
            size_bytes=len(data),
            sha256=sha,
            content_type=header.mime_type,
            filename=posixpath.basename(name),
            orientation=header.orientation,
        )
        image.created_at.GetCurrentTime()
        return image

    async def _settle(self, batch: _Claimed, *, copy: bool) -> int:
        """Record the items whose job ended (outputs, bytes, seconds; the copy to the
        destination when `copy`)."""
        rows = await self.pool.fetch(
            """SELECT i.idx, i.name, i.job_id, i.size_bytes FROM jobs.batch_items i
            JOIN jobs.jobs j ON j.job_id = i.job_id
            WHERE i.batch_id = $1 AND i.state = 'SUBMITTED'
              AND j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
            ORDER BY i.idx""",
            batch.batch_id,
        )
        dest = None
        if copy and batch.destination is not None and rows:
            dest = await self._bucket(batch.tenant_id, batch.destination)
        await asyncio.gather(*(self._settle_one(batch, r, dest) for r in rows))
        return len(rows)

    async def _settle_one(self, batch: _Claimed, row: asyncpg.Record, dest: Bucket | None) -> None:
        job, outputs = await self._read_job(batch.tenant_id, row["job_id"])
        state = job_pb2.Job.State.Name(job.state)
        entries: list[batch_pb2.ArchiveEntry] = []
        reason = message = None
        dest_key = None
        if job.state == job_pb2.Job.SUCCEEDED:
            entries = _entries(outputs, row["name"])
            if dest is not None and batch.destination is not None:
                base = self._prefix(batch.tenant_id, batch.destination)
                if base and not base.endswith("/"):
                    base += "/"
                try:
                    for e in entries:
                        data = await self.platform.get(e.key)
                        ctype = next(
                            (o.content_type for o in job.outputs if o.sha256 == e.sha256),
                            "application/octet-stream",
                        )
                        await dest.write(base + e.name, data, ctype)
                    dest_key = base + entries[0].name if entries else None
                except ServiceError as exc:
                    # The image is done but not delivered: it fails with the reason (a retry
                    # of the whole batch item would redo the same write).
                    state, reason = FAILED, "DESTINATION_WRITE_FAILED"
                    message = f"writing to the destination: {exc.message}"
        elif job.state == job_pb2.Job.FAILED:
            reason = job.error.reason or job.error.code or "FAILED"
            message = job.error.message
        # Created to finished: the image's time in the mesh (its queue wait is bounded by the
        # window). Stage start times are not used: a fast task reports no TaskStarted, so its
        # stage "starts" when it completes.
        seconds = None
        if job.HasField("finished_at"):
            seconds = (job.finished_at.ToDatetime() - job.created_at.ToDatetime()).total_seconds()
        status = await self.pool.execute(
            """UPDATE jobs.batch_items SET state=$3, error_reason=$4, error_message=$5,
                bytes_out=$6, seconds=$7, outputs=$8, destination_key=$9, job_outputs=$10
            WHERE batch_id=$1 AND idx=$2 AND state='SUBMITTED'""",
            batch.batch_id,
            row["idx"],
            state,
            reason,
            message,
            sum(e.size_bytes for e in entries),
            seconds,
            batches_pb2.ListArchiveEntriesResponse(entries=entries).SerializeToString(),
            dest_key,
            batch_pb2.BatchItem(outputs=job.outputs).SerializeToString()
            if state == SUCCEEDED
            else None,
        )
        if status == "UPDATE 1":  # this round settled it (not a concurrent one)
            metrics.BATCH_IMAGES(state).inc()
            metrics.BATCH_BYTES("in").inc(row["size_bytes"] or 0)
            metrics.BATCH_BYTES("out").inc(sum(e.size_bytes for e in entries))

    async def count_metrics(self) -> None:
        """pixmesh_batches: the batches by state, 0 for a state none is in."""
        rows = await self.pool.fetch("SELECT state, count(*) AS n FROM jobs.batches GROUP BY state")
        counts = {r["state"]: r["n"] for r in rows}
        for state in (RUNNING, SUCCEEDED, FAILED, CANCELLED, *counts):
            metrics.BATCHES(state).set(counts.get(state, 0))

    async def _finish(
        self, batch_id: str, state: str, conn: asyncpg.Connection | None = None
    ) -> None:
        """End the batch with its summary (on `conn` when given: the transaction of `_stop`)."""
        db = conn or self.pool
        summary = await self._summary(batch_id, db)
        await db.execute(
            """UPDATE jobs.batches SET state = CASE WHEN state = 'RUNNING' THEN $2 ELSE state END,
                summary = $3, updated_at = now(), finished_at = coalesce(finished_at, now()),
                webhook_state = CASE WHEN webhook_url IS NOT NULL
                    THEN coalesce(webhook_state, 'PENDING') END,
                webhook_next_at = coalesce(webhook_next_at, now())
            WHERE batch_id = $1""",
            batch_id,
            state,
            summary.SerializeToString(),
        )
        # Its webhook (if any) is due now.
        self._wake.set()
        if conn is None:
            # Written (`_stop` tells the streams once its transaction committed).
            self._changed(batch_id, ended=True)
        log.info("batch ended", extra={"batch_id": batch_id, "state": state})

    async def _summary(
        self, batch_id: str, db: asyncpg.Connection | asyncpg.Pool
    ) -> batch_pb2.BatchSummary:
        totals = await db.fetchrow(
            """SELECT count(*) AS images,
                count(*) FILTER (WHERE i.state = 'SUCCEEDED') AS succeeded,
                count(*) FILTER (WHERE i.state = 'FAILED') AS failed,
                count(*) FILTER (WHERE i.state = 'CANCELLED') AS cancelled,
                coalesce(sum(i.size_bytes) FILTER (WHERE i.state = 'SUCCEEDED'), 0)::bigint AS ok_in,
                coalesce(sum(i.size_bytes) FILTER (WHERE i.state IN ('SUCCEEDED', 'FAILED')
                    AND i.job_id IS NOT NULL), 0)::bigint AS bytes_in,
                coalesce(sum(i.bytes_out), 0)::bigint AS bytes_out,
                percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY i.seconds)
                    FILTER (WHERE i.state = 'SUCCEEDED' AND i.seconds IS NOT NULL) AS pct,
                avg(i.seconds) FILTER (WHERE i.state = 'SUCCEEDED') AS mean_s,
                min(i.seconds) FILTER (WHERE i.state = 'SUCCEEDED') AS min_s,
                max(i.seconds) FILTER (WHERE i.state = 'SUCCEEDED') AS max_s,
                b.created_at, coalesce(b.finished_at, now()) AS finished_at,
                b.source, b.destination
            FROM jobs.batches b LEFT JOIN jobs.batch_items i ON i.batch_id = b.batch_id
            WHERE b.batch_id = $1
            GROUP BY b.created_at, b.finished_at, b.source, b.destination""",
            batch_id,
        )
        assert totals is not None
        wall = max((totals["finished_at"] - totals["created_at"]).total_seconds(), 1e-6)
        s = batch_pb2.BatchSummary(
            images=totals["images"],
            succeeded=totals["succeeded"],
            failed=totals["failed"],
            cancelled=totals["cancelled"],
            bytes_in=totals["bytes_in"],
            bytes_out=totals["bytes_out"],
            wall_seconds=wall,
            source=_location_name(totals["source"]),
            destination=_location_name(totals["destination"]) if totals["destination"] else "",
            batch_ids=[batch_id],
        )
        # The figures that follow from these, as a folder run derives them (one format).
        summaries.derive(s, totals["ok_in"])
        if totals["pct"]:
            s.p50_seconds, s.p95_seconds = totals["pct"]
            s.mean_seconds = totals["mean_s"]
            s.min_seconds, s.max_seconds = totals["min_s"], totals["max_s"]
        s.started_at.FromDatetime(totals["created_at"])
        s.finished_at.FromDatetime(totals["finished_at"])
        groups: dict[str, batch_pb2.BatchFailureGroup] = {}
        for r in await db.fetch(
            """SELECT reason, n, name, message, job_id FROM (
                SELECT coalesce(error_reason, 'FAILED') AS reason, name, error_message AS message,
                    job_id, idx, row_number() OVER w AS rn, count(*) OVER w AS n
                FROM jobs.batch_items WHERE batch_id = $1 AND state = 'FAILED'
                WINDOW w AS (PARTITION BY coalesce(error_reason, 'FAILED') ORDER BY idx
                             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) f
            WHERE rn <= $2 ORDER BY reason, idx""",
            batch_id,
            SUMMARY_NAMES,
        ):
            g = groups.setdefault(r["reason"], batch_pb2.BatchFailureGroup(reason=r["reason"]))
            g.count = r["n"]
            g.failures.add(name=r["name"], message=r["message"] or "", job_id=r["job_id"] or "")
        s.failures.extend(groups[k] for k in sorted(groups))
        return s


def _location_name(stored: bytes | None) -> str:
    """A summary's source/destination: "<connection id>:<prefix>" ("" connection: the
    platform's storage), "images" for a list of image ids (no stored location)."""
    if not stored:
        return "images"
    loc = batch_pb2.StorageLocation.FromString(stored)
    return f"{loc.connection_id}:{loc.prefix}"


def _entries(
    outputs: Sequence[tuple[job_pb2.Output, str]], name: str
) -> list[batch_pb2.ArchiveEntry]:
    return [
        batch_pb2.ArchiveEntry(
            name=archive_name(name, output.rendition, output.format),
            key=key,
            size_bytes=output.size_bytes,
            sha256=output.sha256,
        )
        for output, key in outputs
    ]


def _item(r: asyncpg.Record) -> batch_pb2.BatchItem:
    state = r["state"]
    if state == QUEUED:
        state = "PENDING"
    elif state == SUBMITTED:
        state = r["job_state"] or "PENDING"
    item = batch_pb2.BatchItem(
        index=r["idx"],
        name=r["name"],
        job_id=r["job_id"] or "",
        state=job_pb2.Job.State.Value(state),
        bytes_in=r["size_bytes"],
        bytes_out=r["bytes_out"],
        destination_key=r["destination_key"] or "",
    )
    if item.state == job_pb2.Job.SUCCEEDED and r["job_outputs"] is not None:
        item.MergeFromString(r["job_outputs"])
    if r["error_reason"]:
        item.error.code = "FAILED_PRECONDITION" if not r["job_id"] else "FAILED"
        item.error.reason = r["error_reason"]
        item.error.message = r["error_message"] or ""
    return item


def _request_hash(req: batches_pb2.CreateBatchRequest) -> str:
    canonical = batches_pb2.CreateBatchRequest()
    canonical.CopyFrom(req)
    canonical.idempotency_key = ""
    canonical.tenant_id = ""
    canonical.webhook.secret = ""
    return hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()


def _encode_token(created: datetime, batch_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created.isoformat()}|{batch_id}".encode()).decode()


def _item_token(token: str) -> int:
    """ListBatchJobs' page token: the index of the next item (an int column). Anything else is
    refused: it used to start again from the first item, or overflow in Postgres (a 500)."""
    if not token:
        return 0
    if token.isascii() and token.isdigit() and len(token) <= 10 and int(token) < 2**31:
        return int(token)
    raise invalid("page_token", "not a token from ListBatchJobs", "BAD_PAGE_TOKEN")


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, batch_id = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), batch_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("page_token", "not a token from ListBatches") from exc
