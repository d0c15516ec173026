"""NATS memory against what PIXMESH_EVENTS holds (issue 16): it prints figures, it does not pass
or fail. Results: BENCHMARKS.md ("Soak and retention").

    .venv/bin/python -m bench.nats_events                          # up to 200,000 jobs' events
    .venv/bin/python -m bench.nats_events --jobs 50000 --steps 4

The soak (bench/soak.py) shows NATS levelling off when the stream stops growing, but only at
the soak's small holdings (a few thousand messages under shortened horizons). Under the default
retention the stream holds an hour of job events and up to 1 GiB of task events; this measures
what the server's memory does as the stream fills to many times the soak's level, so that the
plateau of the defaults is computed from a slope measured here, not guessed.

It starts a `nats-server` of its own (the local stack's flags, free ports, a temporary folder),
creates the streams through `Bus.ensure_streams` with the default retention, then publishes, per
simulated job, what the soak measured per job: 2.2 job events on the job's own subject (with the
relay's Nats-TTL, 1 h) and 1.4 task or upload events on shared subjects, of about 0.95 KB each
(random bytes). After each step it waits a few seconds and samples the server's RSS (VmRSS) and
the stream's messages and bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from deploy.local import Ports
from deploy.local.servers import nats_spec
from services.runtime import bus as busmod
from services.runtime.bus import Bus, EventRetention

PAYLOAD = 950
JOB_EVENTS_PER_JOB = 2.2
TASK_EVENTS_PER_JOB = 1.4
TASK_SUBJECTS = [busmod.task_event_subject(k) for k in ("completed", "started", "failed")]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def publish_jobs(bus: Bus, first: int, count: int, rng: random.Random) -> None:
    body = os.urandom(PAYLOAD)
    sem = asyncio.Semaphore(256)

    async def one(subject: str, msg_id: str) -> None:
        async with sem:
            await bus.publish_raw(subject, body, msg_id=msg_id, inject_trace=False, timeout=30)

    pending = []
    for j in range(first, first + count):
        job_id = f"job{j:09d}"
        for k in range(2 + (rng.random() < JOB_EVENTS_PER_JOB - 2)):
            pending.append(one(busmod.job_event_subject(job_id), f"{job_id}.{k}"))
        for k in range(1 + (rng.random() < TASK_EVENTS_PER_JOB - 1)):
            pending.append(one(rng.choice(TASK_SUBJECTS), f"{job_id}.t{k}"))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def fill(args: argparse.Namespace, url: str, pid: int) -> None:
    bus = await Bus.connect(url, "bench-nats-events", events=EventRetention())
    try:
        await bus.ensure_streams()
        rng = random.Random(16)
        print(f"{'jobs':>8} {'messages':>9} {'stream MB':>9} {'RSS MB':>7}")
        step = args.jobs // args.steps
        done = 0
        for i in range(args.steps + 1):
            if i:
                await publish_jobs(bus, done, step, rng)
                done += step
            await asyncio.sleep(args.settle_s)
            state = (await bus.js.stream_info(busmod.EVENTS_STREAM)).state
            print(f"{done:>8} {state.messages:>9} {state.bytes / 1e6:>9.1f} {rss_mb(pid):>7.0f}")
    finally:
        await bus.close()


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-nats-"))
    ports = Ports.free()
    spec = nats_spec(ports, tmp / "nats")
    proc = subprocess.Popen(spec.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{ports.nats_monitoring(1)}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        asyncio.run(fill(args, f"nats://127.0.0.1:{ports.nats_client(1)}", proc.pid))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nats_events")
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=5.0)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
