"""Soak: the whole local stack under a steady, realistic load for N minutes; does anything grow?
It prints figures, it does not pass or fail. Results: BENCHMARKS.md (issue 16).

    .venv/bin/python -m bench.soak --minutes 60 --rate 14     # the issue's target run
    .venv/bin/python -m bench.soak --minutes 6 --rate 5       # a short check

Starts a stack like tests/conftest.py does (free loopback ports, temporary folder, Envoy and the
five services), creates an API key, then for --minutes runs an open-loop client over REST
through Envoy: --rate jobs per second (a job starts on schedule whether or not the earlier ones
finished; at most --max-inflight at once), each one

  upload   with probability --new-uploads (default 20%) a new image (a small JPEG of its own,
           POST /v1/images), else one of the images already uploaded;
  create   POST /v1/jobs with one of a mix: resize+webp (50%), resize+crop+jpeg (20%),
           extract_metadata (15%), resize then extract_metadata (15%);
  follow   GET /v1/jobs/{id}:watch (NDJSON) until the job ends.

Every --sample-s seconds (default 60) it records, per process of the stack (process trees:
Postgres with its backends, imaging with its children): RSS (PSS for Postgres, whose shared
buffers every backend maps), open file descriptors and CPU seconds; Postgres table sizes
(jobs.*, metadata.*, gateway.*, the database); each JetStream stream's messages and bytes; the
size of NATS's, SeaweedFS's and the trace sink's folders. Per minute: jobs finished, failures,
p50/p99 of job latency (create -> terminal state seen) and of CreateJob.

At the end: the table per minute, then per process the RSS slope after warm-up (MB/min, least
squares over the minutes after --warmup-min) and first-vs-last; storage growth per 1,000 jobs;
p99 latency of the first and last 10 minutes (or sixth of the run when shorter) and their ratio.

--env KEY=VALUE (repeatable) sets a variable of every service, e.g. retention horizons short
enough to be reached within the run (PIXMESH_JOB_EVENT_TTL_S=300, PIXMESH_EVENTS_MAX_AGE_S=900),
so that what they bound levels off while it is watched. --outputs-retention SECONDS sets the soak
tenant's retention of finished jobs and their outputs (`set-retention --outputs`), which bounds
jobs.jobs and jobs.stages; with PIXMESH_TENANT_RETENTION_INTERVAL_S it applies within the run.
--sources-retention SECONDS likewise sets the retention of its images (with their metadata, jobs
and bytes), which bounds gateway.images and metadata.image_metadata; jobs then pick only images
uploaded less than SECONDS - SOURCE_MARGIN_S ago, so that none is deleted under a job.

Postgres memory is split so that its growth can be attributed: PSS of the whole tree; the sum of
its processes' USS (private memory: catalog caches, work memory of each backend); its
processes' count; and the shared buffers holding a page (pg_buffercache, as the superuser). PSS
counts each shared page once across the tree, so PSS - USS is the shared memory touched: the
buffer cache (at most `shared_buffers`) plus the shared libraries.

--seed-jobs N first copies one finished job of the warm-up N times straight into Postgres
(jobs.jobs and jobs.stages, created over the past N seconds, then ANALYZE), so that a run on a
registry holding N finished jobs can be compared with one on a fresh stack (issue 16, item 2).

--prefill-min M runs the same load for M minutes first, unreported. With short retention horizons
the first minutes of a stack are another regime: nothing is deleted yet and repeated jobs find
their outputs, so a job costs less CPU than once retention runs (BENCHMARKS.md, the 643751e run:
62 -> 73 ms). M past the longest horizon makes both windows steady state.

After the figures: CPU per job by process between two samples (reaped children included), with
the job p99 of those minutes, Postgres's autovacuum/autoanalyze runs, the load average and how
long the sample took. Samples are taken in a process of their own: in the load's process their
synchronous work (/proc of every process, folder walks, the stream's subject list) stalled the
client for as long, and with it the latencies it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import io
import itertools
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import psutil
from PIL import Image

from deploy.local import SERVICES, Ports, Stack, servers
from services.runtime import bus as busmod

OPERATION_MIX: list[tuple[float, list[dict[str, Any]]]] = [
    (0.50, [{"resize": {"width": 160}}, {"convert": {"format": "WEBP"}}]),
    (
        0.20,
        [
            {"resize": {"width": 200}},
            {"crop": {"x": 0, "y": 0, "width": 100, "height": 80}},
            {"convert": {"format": "JPEG"}},
        ],
    ),
    (0.15, [{"extract_metadata": {}}]),
    (0.15, [{"resize": {"width": 120}}, {"extract_metadata": {}}]),
]
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# --sources-retention: jobs use images at least this much younger than the retention.
SOURCE_MARGIN_S = 120
TABLES = (
    "jobs.jobs",
    "jobs.stages",
    "jobs.outbox",
    "jobs.processed_events",
    "jobs.webhook_deliveries",
    "metadata.image_metadata",
    "gateway.images",
)


def new_jpeg(rng: random.Random) -> bytes:
    """A small photo-like JPEG whose bytes (and so sha256) are its own."""
    img = Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3)))
    pixels = img.load()
    assert pixels is not None
    for _ in range(400):
        x, y = rng.randrange(320), rng.randrange(240)
        pixels[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def pick_operations(rng: random.Random) -> list[dict[str, Any]]:
    r = rng.random()
    for share, ops in OPERATION_MIX:
        if r < share:
            return ops
        r -= share
    return OPERATION_MIX[0][1]


@dataclass
class Minute:
    jobs: int = 0
    failed: int = 0
    errors: int = 0
    latency: list[float] = field(default_factory=list)
    create: list[float] = field(default_factory=list)


@dataclass
class Sample:
    at_min: float
    jobs_done: int
    processes: dict[str, tuple[float, int, float]]  # name -> (MB, fds, cpu s)
    tables: dict[str, float]  # MB
    streams: dict[str, tuple[int, float]]  # name -> (messages, MB)
    job_events: int  # messages on pixmesh.event.job.> (the rest of PIXMESH_EVENTS: task/upload)
    folders: dict[str, float]  # MB
    # Postgres: (USS MB summed over its processes, MB of shared buffers holding a page,
    # processes, shared_buffers MB)
    pg: tuple[float, float, int, float] = (0.0, 0.0, 0, 0.0)
    # Postgres: autovacuum and autoanalyze runs so far, summed over the user tables
    autovacuums: tuple[int, int] = (0, 0)
    load1: float = 0.0  # the 1-minute load average
    took_s: float = 0.0  # how long taking the sample took (in the sampling process)


def p(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def folder_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_size
    return total / 1e6


def process_tree(pid: int, pss: bool) -> tuple[float, int, float]:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return (0.0, 0, 0.0)
    mem = fds = 0
    cpu = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            mem += proc.memory_full_info().pss if pss else proc.memory_info().rss
            fds += proc.num_fds()
            t = proc.cpu_times()
            # children_*: what its reaped children used (Postgres's autovacuum workers, which
            # come and go between samples), so a tree's CPU does not lose the processes that ended.
            cpu += t.user + t.system + t.children_user + t.children_system
    return mem / 1e6, fds, cpu


def uss_tree(pid: int) -> tuple[float, int]:
    """Private memory (USS, MB) summed over a process tree, and its process count."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return (0.0, 0)
    uss = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            uss += proc.memory_full_info().uss
    return uss / 1e6, len(procs)


async def buffer_cache(superuser_dsn: str) -> tuple[float, float]:
    """MB of shared buffers holding a page, and shared_buffers (MB)."""
    conn = await asyncpg.connect(superuser_dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        used = await conn.fetchval(
            "SELECT count(*) FROM pg_buffercache WHERE relfilenode IS NOT NULL"
        )
        block = await conn.fetchval("SELECT current_setting('block_size')::int")
        total = await conn.fetchval(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers'"
        )
        return used * block / 1e6, total * block / 1e6
    finally:
        await conn.close()


@dataclass(frozen=True)
class Where:
    """What a sample reads, picklable for the sampling process."""

    pids: dict[str, int]
    database_url: str
    nats_url: str
    data_dir: Path
    run_dir: Path


def take_sample(where: Where) -> Sample:
    """Runs in the sampling process; at_min and jobs_done are the caller's."""
    return asyncio.run(_sample(where))


async def _sample(where: Where) -> Sample:
    pids = where.pids
    processes = {
        name: process_tree(pid, pss=name == "postgres") for name, pid in sorted(pids.items())
    }
    conn = await asyncpg.connect(where.database_url)
    try:
        tables = {
            t: (await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t)) / 1e6
            for t in TABLES
        }
        tables["database"] = (
            await conn.fetchval("SELECT pg_database_size(current_database())")
        ) / 1e6
        row = await conn.fetchrow(
            "SELECT coalesce(sum(autovacuum_count), 0)::int AS v,"
            " coalesce(sum(autoanalyze_count), 0)::int AS a FROM pg_stat_user_tables"
        )
        autovacuums = (row["v"], row["a"])
    finally:
        await conn.close()
    nc = await nats.connect(where.nats_url)
    try:
        js = nc.jetstream()
        streams = {}
        for name in busmod.STREAMS:
            with contextlib.suppress(Exception):
                st = (await js.stream_info(name)).state
                streams[name] = (st.messages, st.bytes / 1e6)
        job_events = 0
        with contextlib.suppress(Exception):
            info = await js.stream_info(
                busmod.EVENTS_STREAM, subjects_filter=busmod.job_event_subject(">")
            )
            job_events = sum((info.state.subjects or {}).values())
    finally:
        await nc.close()
    data = where.data_dir
    folders = {
        "nats": sum(folder_mb(d) for d in data.glob("nats*")),
        "seaweedfs": folder_mb(data / "seaweedfs"),
        "postgres": folder_mb(data / "postgres"),
        "traces": sum(f.stat().st_size for f in where.run_dir.glob("traces.jsonl*")) / 1e6,
    }
    pg = (0.0, 0.0, 0, 0.0)
    if "postgres" in pids:
        uss, count = uss_tree(pids["postgres"])
        superuser = where.database_url.replace(
            f"//{servers.DB_ROLE}@", f"//{servers.PG_SUPERUSER}@", 1
        )
        used, total = (0.0, 0.0)
        with contextlib.suppress(Exception):
            used, total = await buffer_cache(superuser)
        pg = (uss, used, count, total)
    return Sample(
        0.0,
        0,
        processes,
        tables,
        streams,
        job_events,
        folders,
        pg,
        autovacuums,
        os.getloadavg()[0],
    )


class Soak:
    def __init__(self, args: argparse.Namespace, stack: Stack, api_key: str) -> None:
        self.args = args
        self.stack = stack
        self.rng = random.Random(args.seed)
        self.http = httpx.AsyncClient(
            base_url=stack.rest_url,
            headers={"authorization": f"Bearer {api_key}"},
            timeout=120.0,
            limits=httpx.Limits(max_connections=args.max_inflight + 8),
        )
        self.images: list[tuple[float, str]] = []  # (uploaded at, image id), oldest first
        self.minutes: dict[int, Minute] = {}
        self.samples: list[Sample] = []
        self.done = 0
        self.inflight = 0
        self.skipped = 0
        self.start = time.monotonic()
        # One process of its own for the samples (spawned: nothing of this loop in it).
        self.sampling = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        )

    def minute(self) -> Minute:
        return self.minutes.setdefault(int((time.monotonic() - self.start) // 60), Minute())

    async def upload(self) -> str:
        data = new_jpeg(self.rng)
        resp = await self.http.post(
            "/v1/images", content=data, headers={"content-type": "image/jpeg"}
        )
        resp.raise_for_status()
        image_id: str = resp.json()["image"]["image_id"]
        self.images.append((time.monotonic(), image_id))
        return image_id

    async def one_job(self) -> None:
        self.inflight += 1
        try:
            if self.args.sources_retention:
                young = time.monotonic() - (self.args.sources_retention - SOURCE_MARGIN_S)
                while self.images and self.images[0][0] < young:
                    self.images.pop(0)
            if not self.images or self.rng.random() < self.args.new_uploads:
                image_id = await self.upload()
            else:
                image_id = self.rng.choice(self.images)[1]
            began = time.monotonic()
            resp = await self.http.post(
                "/v1/jobs", json={"image_id": image_id, "operations": pick_operations(self.rng)}
            )
            created = time.monotonic()
            resp.raise_for_status()
            job_id = resp.json()["job"]["job_id"]
            state = ""
            async with self.http.stream("GET", f"/v1/jobs/{job_id}:watch") as watch:
                async for line in watch.aiter_lines():
                    if line.strip():
                        msg = json.loads(line)
                        state = msg.get("result", msg).get("job", {}).get("state", "")
                        if state in TERMINAL:
                            break
            minute = self.minute()
            minute.jobs += 1
            minute.create.append(created - began)
            minute.latency.append(time.monotonic() - began)
            minute.failed += state != "SUCCEEDED"
            self.done += 1
        except (httpx.HTTPError, KeyError, ValueError):
            self.minute().errors += 1
        finally:
            self.inflight -= 1

    async def sample(self) -> None:
        """One sample, taken in another process (`take_sample`): reading every process's memory,
        walking the data folders and parsing the stream's subject list take a few hundred ms
        that, in this process, would stall the load and show in the very latencies measured."""
        at_min, done, began = (time.monotonic() - self.start) / 60, self.done, time.monotonic()
        where = Where(
            self.stack.pids(),
            self.stack.database_url,
            self.stack.nats_url,
            self.stack.data_dir,
            self.stack.run_dir,
        )
        loop = asyncio.get_running_loop()
        taken: Sample = await loop.run_in_executor(self.sampling, take_sample, where)
        self.samples.append(
            dataclasses.replace(
                taken, at_min=at_min, jobs_done=done, took_s=time.monotonic() - began
            )
        )

    async def sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.args.sample_s)

    async def seed(self, n: int) -> None:
        """N copies of a finished job of the warm-up, as if the registry had run for a while."""
        conn = await asyncpg.connect(self.stack.database_url)
        try:
            template = await conn.fetchval(
                "SELECT job_id FROM jobs.jobs WHERE state = 'SUCCEEDED' ORDER BY created_at LIMIT 1"
            )
            for table in ("jobs", "stages"):
                columns = [
                    r["column_name"]
                    for r in await conn.fetch(
                        "SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = 'jobs' AND table_name = $1 ORDER BY ordinal_position",
                        table,
                    )
                ]
                made = {
                    "job_id": "'seed_' || g",
                    "idempotency_key": "NULL",
                    "created_at": "now() - g * interval '1 second'",
                    "updated_at": "now() - g * interval '1 second' + interval '1 second'",
                    "finished_at": "now() - g * interval '1 second' + interval '1 second'",
                }
                values = ", ".join(made.get(c, c) for c in columns)
                await conn.execute(
                    f"INSERT INTO jobs.{table} ({', '.join(columns)})"
                    f" SELECT {values} FROM jobs.{table}, generate_series(1, $2) g"
                    " WHERE job_id = $1",
                    template,
                    n,
                )
            await conn.execute("ANALYZE jobs.jobs; ANALYZE jobs.stages")
        finally:
            await conn.close()

    async def run(self) -> None:
        for _ in range(20):
            await self.upload()
        if self.args.seed_jobs:
            for _ in range(5):
                await self.one_job()
            await self.seed(self.args.seed_jobs)
            self.minutes.clear()
            self.done = 0
        if self.args.prefill_min:
            # The same load before the measured hour, not counted: with retention horizons
            # shorter than this, both of the report's windows see the steady state (deletions
            # as many as creations, outputs of repeated jobs expired) instead of the first
            # one seeing an empty stack.
            self.start = time.monotonic()
            await self.load(self.args.prefill_min * 60)
            self.minutes.clear()
            self.done = self.skipped = 0
        self.start = time.monotonic()
        stop = asyncio.Event()
        sampler = asyncio.create_task(self.sampler(stop))
        await self.load(self.args.minutes * 60)
        stop.set()
        await sampler
        await self.sample()
        await self.http.aclose()
        self.sampling.shutdown()

    async def load(self, seconds: float) -> None:
        """Start jobs open loop at --rate for `seconds`, then wait for them to finish."""
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.args.rate
        due = time.monotonic()
        end = due + seconds
        while due < end:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += interval
            if self.inflight >= self.args.max_inflight:
                self.skipped += 1
                continue
            task = asyncio.create_task(self.one_job())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.wait(tasks, timeout=120) if tasks else None


def report(soak: Soak, args: argparse.Namespace) -> None:
    print(
        f"\n== soak: {args.minutes} min at {args.rate} jobs/s, {args.new_uploads:.0%} new uploads,"
        f" {args.seed_jobs} finished jobs seeded, after {args.prefill_min} min of the same load"
    )
    print(f"services' extra environment: {' '.join(args.env) or 'none'}")
    print(f"tenant retention of outputs: {args.outputs_retention or 'none'} s")
    print(f"tenant retention of sources: {args.sources_retention or 'none'} s")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load avg {os.getloadavg()}")
    print(f"jobs finished: {soak.done}, not started (over --max-inflight): {soak.skipped}")
    print("\nper minute:   jobs  failed  errors  p50 s  p99 s  create p50  create p99")
    for m, row in sorted(soak.minutes.items()):
        print(
            f"  {m:>4}      {row.jobs:>5}  {row.failed:>6}  {row.errors:>6}"
            f"  {p(row.latency, 0.5):>5.2f}  {p(row.latency, 0.99):>5.2f}"
            f"  {p(row.create, 0.5):>10.3f}  {p(row.create, 0.99):>10.3f}"
        )
    samples = soak.samples
    if len(samples) < 2:
        return
    print(
        "\nsamples:  min   jobs  db MB  events MB (job events)  nats MB  weed MB  pg PSS MB"
        "  jobs RSS  gateway RSS  traces MB"
    )
    for s in samples:
        ev = s.streams.get(busmod.EVENTS_STREAM, (0, 0.0))
        print(
            f"  {s.at_min:>10.1f} {s.jobs_done:>6} {s.tables['database']:>6.1f}"
            f" {ev[1]:>10.1f} ({ev[0]} msgs, {s.job_events} job)"
            f" {s.processes.get('nats', (0.0,))[0]:>8.0f} {s.processes.get('seaweedfs', (0.0,))[0]:>8.0f}"
            f" {s.processes.get('postgres', (0.0,))[0]:>10.0f} {s.processes.get('jobs', (0.0,))[0]:>9.0f}"
            f" {s.processes.get('gateway', (0.0,))[0]:>12.0f} {s.folders['traces']:>10.1f}"
        )
    first, last = samples[0], samples[-1]
    after = [s for s in samples if s.at_min >= args.warmup_min] or samples
    print(
        f"\nPostgres memory (shared_buffers {last.pg[3]:.0f} MB):"
        "  min  PSS MB  USS MB (private)  PSS-USS  buffers used MB  processes"
    )
    for s in samples:
        pss = s.processes.get("postgres", (0.0,))[0]
        print(
            f"  {s.at_min:>6.1f} {pss:>7.0f} {s.pg[0]:>17.0f} {pss - s.pg[0]:>8.0f}"
            f" {s.pg[1]:>16.0f} {s.pg[2]:>10}"
        )
    xs = [s.at_min for s in after]
    print(
        f"  slopes after {args.warmup_min} min (MB/min): PSS"
        f" {slope(xs, [s.processes.get('postgres', (0.0,))[0] for s in after]):.2f},"
        f" USS {slope(xs, [s.pg[0] for s in after]):.2f},"
        f" buffers used {slope(xs, [s.pg[1] for s in after]):.2f}"
    )
    print(f"\nprocesses (MB: RSS, Postgres PSS; slope after {args.warmup_min} min):")
    print(f"  {'name':<12} {'first MB':>9} {'last MB':>8} {'MB/min':>7} {'fds':>9} {'cpu s':>8}")
    for name in first.processes:
        xs = [s.at_min for s in after if name in s.processes]
        ys = [s.processes[name][0] for s in after if name in s.processes]
        f0, l0 = first.processes[name], last.processes.get(name, (0.0, 0, 0.0))
        print(
            f"  {name:<12} {f0[0]:>9.0f} {l0[0]:>8.0f} {slope(xs, ys):>7.2f}"
            f" {f0[1]:>4}->{l0[1]:<4} {l0[2] - f0[2]:>8.0f}"
        )
    jobs = max(1, last.jobs_done - first.jobs_done)
    print(f"\nstorage (MB; growth per 1,000 jobs over {jobs} jobs):")
    for group, a, b in (
        ("table", first.tables, last.tables),
        ("folder", first.folders, last.folders),
    ):
        for name in a:
            print(
                f"  {group:<6} {name:<26} {a[name]:>8.1f} -> {b[name]:>8.1f}"
                f"  {(b[name] - a[name]) * 1000 / jobs:>+8.2f}"
            )
    for name in first.streams:
        (m0, b0), (m1, b1) = first.streams[name], last.streams.get(name, (0, 0.0))
        print(
            f"  stream {name:<26} {b0:>8.1f} -> {b1:>8.1f}  {(b1 - b0) * 1000 / jobs:>+8.2f}"
            f"   ({m0} -> {m1} messages)"
        )
    # Whole minutes of the schedule only (the last one ends with the stragglers).
    mins = sorted(m for m in soak.minutes if m < int(args.minutes)) or sorted(soak.minutes)
    window = max(1, min(10, len(mins) // 6))
    head = [x for m in mins[:window] for x in soak.minutes[m].latency]
    tail = [x for m in mins[-window:] for x in soak.minutes[m].latency]
    head_c = [x for m in mins[:window] for x in soak.minutes[m].create]
    tail_c = [x for m in mins[-window:] for x in soak.minutes[m].create]
    print(f"\nfirst vs last {window} min:")
    print(
        f"  job p99     {p(head, 0.99):.3f} s -> {p(tail, 0.99):.3f} s"
        f"  (x{p(tail, 0.99) / p(head, 0.99):.2f})"
    )
    print(
        f"  CreateJob p99 {p(head_c, 0.99):.3f} s -> {p(tail_c, 0.99):.3f} s"
        f"  (x{p(tail_c, 0.99) / p(head_c, 0.99):.2f})"
    )
    cpu0 = sum(v[2] for v in first.processes.values())
    cpu1 = sum(v[2] for v in last.processes.values())
    print(f"  CPU per job (every process of the stack): {(cpu1 - cpu0) * 1000 / jobs:.0f} ms")
    cpu_per_interval(soak)


def cpu_per_interval(soak: Soak) -> None:
    """CPU per process between samples (ms per job finished in the interval), beside the
    interval's job p99 and Postgres's autovacuum/autoanalyze runs: a latency bump that one
    process's cost explains shows here."""
    samples = soak.samples
    names = list(samples[0].processes)
    print(
        "\nCPU per job by process between samples (ms), with job p99 (s) and autovacuum/analyze runs:"
    )
    print(
        "  "
        + f"{'min':>5}"
        + "".join(f" {n[:9]:>9}" for n in names)
        + "    total   p99  vac/an  load  sample s"
    )
    for a, b in itertools.pairwise(samples):
        jobs = b.jobs_done - a.jobs_done
        if jobs <= 0:
            continue
        per = [
            (b.processes.get(n, (0.0, 0, 0.0))[2] - a.processes.get(n, (0.0, 0, 0.0))[2])
            * 1000
            / jobs
            for n in names
        ]
        lat = [
            x
            for m, row in soak.minutes.items()
            if a.at_min <= m + 0.5 < b.at_min
            for x in row.latency
        ]
        vac = (b.autovacuums[0] - a.autovacuums[0], b.autovacuums[1] - a.autovacuums[1])
        print(
            f"  {b.at_min:>5.1f}"
            + "".join(f" {x:>9.1f}" for x in per)
            + f" {sum(per):>8.1f} {p(lat, 0.99):>5.2f}  {vac[0]:>2}/{vac[1]:<2}  {b.load1:>4.1f}  {b.took_s:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="jobs started per second")
    parser.add_argument("--new-uploads", type=float, default=0.2)
    parser.add_argument("--max-inflight", type=int, default=200)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--warmup-min", type=float, default=2.0)
    parser.add_argument(
        "--prefill-min",
        type=float,
        default=0.0,
        help="minutes of the same load before the measured --minutes (not reported)",
    )
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--seed-jobs", type=int, default=0, help="finished jobs to start with")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variable of every service",
    )
    parser.add_argument(
        "--outputs-retention", type=int, default=0, metavar="SECONDS", help="0: none"
    )
    parser.add_argument(
        "--sources-retention", type=int, default=0, metavar="SECONDS", help="0: none"
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    tmp = Path(tempfile.mkdtemp(prefix="pixmesh-soak-"))
    stack = Stack(tmp, Ports.free(), durable=False, service_env={"*": env})
    try:
        stack.start_infra()
        stack.start_envoy()
        stack.start_services(SERVICES)
        soak = Soak(args, stack, stack.create_api_key("soak"))
        retention = [
            *(["--outputs", str(args.outputs_retention)] if args.outputs_retention else []),
            *(["--sources", str(args.sources_retention)] if args.sources_retention else []),
        ]
        if retention:
            stack.gateway_admin("set-retention", "--tenant", "soak", *retention)
        asyncio.run(soak.run())
        report(soak, args)
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
