"""Bulk benchmark (issue 12): a folder of photo-like JPEG/PNG files converted to WebP q80 through
`pixmesh batch`, against a bare Pillow multiprocessing loop doing the same conversion on the
same files in the same run. It prints figures, it does not pass or fail. Results: BENCHMARKS.md.

    .venv/bin/python -m bench.batch                          # 48 photos of 2-6 MP
    .venv/bin/python -m bench.batch --count 300 --max-mp 12  # the issue's folder (>= 300 MB)
    .venv/bin/python -m bench.batch --interactive 20         # + interactive p95, idle vs batch
    .venv/bin/python -m bench.batch --count 300 --max-mp 12 --interactive 60 --fresh \
        --gap 1.0 --no-bare --folder /tmp/photos300          # the lane alone, photos kept

Order: the bare loop (a Pool of one process per core: open, convert to RGB where needed, save
WEBP quality 80 method 4, Pillow's defaults otherwise), then the stack started like
tests/conftest.py does (free loopback ports, `durable=False`) and `pixmesh batch DIR -o OUT
--op convert=webp:80` run as a subprocess. Figures: input MB per second of wall time and per
core (both runs may use every core of the machine), images per second, the ratio of the two;
the peak RSS of the CLI and of every server and service process (sampled every 0.2 s with
psutil); the CPU seconds (user + system) of each of those processes and its children (the
imaging pipeline processes, Postgres backends) over the batch phase, per image, beside the bare
pool's CPU (its reaped workers' rusage): CPU time holds up under machine load where wall time
does not (with --interactive, the interactive jobs' CPU is included); with --interactive N, the p50/p95 of N single small jobs (upload, job, watch) run one
after another on an idle stack and the same while the batch runs (the lane: batch jobs are
created only while the imaging queue holds fewer than a few undelivered tasks, and run in
pipeline processes PIXMESH_WORKER_BATCH_NICE steps nicer than the interactive one's: the
environment reaches the services, so PIXMESH_WORKER_BATCH_NICE=0 measures without it).
With --interactive, each job's hops too (upload, create, to the worker, the worker, to the jobs
service, apply, to the client), idle and during the batch, from the client's timestamps and the
stack's spans (its OTLP sink's file). The interactive jobs upload one image: after the first,
its output is found stored and no pipeline runs; --fresh gives each job an image of its own
(the idle round and the batch round different ones: a batch-round job that uploads an idle
round's image finds its output stored), and the hops say for how many a pipeline ran. --gap S
spaces the jobs S seconds apart in both rounds, so that the batch round spreads over the batch;
a batch-round job that ends after the batch is not counted.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from bench.imaging import photo
from deploy.observability.spans import read_spans

SIZES_MP = (2, 3, 4, 6, 8, 12)


def make_folder(folder: Path, count: int, max_mp: int) -> int:
    """`count` photos, sizes cycling through SIZES_MP up to `max_mp`, one in ten a PNG; the
    total bytes."""
    sizes = [mp for mp in SIZES_MP if mp <= max_mp] or [max_mp]
    total = 0
    for i in range(count):
        mp = sizes[i % len(sizes)]
        width = int((mp * 1e6 * 4 / 3) ** 0.5)
        size = (width, int(width * 3 / 4))
        data = photo(size, seed=i)
        sub = folder / f"set{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        if i % 10 == 9:
            with Image.open(io.BytesIO(data)) as img:
                out = io.BytesIO()
                img.resize((size[0] // 2, size[1] // 2)).save(out, "PNG")
                data = out.getvalue()
            path = sub / f"p{i:04d}.png"
        else:
            path = sub / f"p{i:04d}.jpg"
        path.write_bytes(data)
        total += len(data)
    return total


def bare_convert(path: str) -> int:
    """What someone writes with Pillow alone: the same conversion (WebP q80)."""
    with Image.open(path) as img:
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGB")
        out = io.BytesIO()
        img.save(out, "WEBP", quality=80)
    return out.tell()


def run_bare(files: list[Path]) -> tuple[float, int, float]:
    """Wall seconds, output bytes and CPU seconds of the pool's workers (reaped children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        outputs = pool.map(bare_convert, [str(f) for f in files], chunksize=1)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, sum(outputs), cpu


class RssSampler(threading.Thread):
    """Peak RSS per process name, polled every 0.2 s."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = dict(pids)
        self.peak: dict[str, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for name, pid in list(self.pids.items()):
                with suppress(psutil.NoSuchProcess):
                    rss = psutil.Process(pid).memory_info().rss
                    self.peak[name] = max(self.peak.get(name, 0), rss)
            self.halt.wait(0.2)


def tree_cpu(pid: int) -> tuple[float, float]:
    """User + system CPU seconds of a process itself, and of its descendants: the live ones
    plus what each of them and the process reaped (`children_user`/`children_system`: the
    imaging pipeline processes the forkserver replaced every max_tasks_per_child tasks,
    Postgres backends)."""
    own = children = 0.0
    with suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        t = proc.cpu_times()
        own = t.user + t.system
        children = t.children_user + t.children_system
        for child in proc.children(recursive=True):
            with suppress(psutil.NoSuchProcess):
                c = child.cpu_times()
                children += c.user + c.system + c.children_user + c.children_system
    return own, children


def cpu_snapshot(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    return {name: tree_cpu(pid) for name, pid in pids.items()}


def nice_values(pid: int) -> list[int]:
    """The nice values of a process's descendants (imaging: its forkserver and pipeline
    processes, whose batch tasks run PIXMESH_WORKER_BATCH_NICE steps nicer)."""
    values = []
    with suppress(psutil.NoSuchProcess):
        for child in psutil.Process(pid).children(recursive=True):
            with suppress(psutil.NoSuchProcess):
                values.append(child.nice())
    return sorted(values)


@dataclass
class Sample:
    """One interactive job, timed by the client (time.time_ns, the clock the spans use): its
    start, upload done, CreateJob answered, terminal state seen by WatchJob."""

    job_id: str
    size: int
    start_ns: int
    uploaded_ns: int
    created_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def interactive(
    target: str,
    key: str,
    n: int,
    image: bytes,
    fresh: bool = False,
    *,
    seed0: int = 0,
    gap: float = 0.0,
    running: Callable[[], bool] | None = None,
) -> list[Sample]:
    """N small jobs one after another (upload, CreateJob, WatchJob to the end), what
    Client.process does, with the steps timed, `gap` seconds apart. With `fresh`, each job has
    an image of its own (seed `seed0 + i`: give each round its own range, or a later round's
    jobs find the earlier one's input and output stored and run no pipeline), so its output is
    computed. With `running`, stop when it turns false (the batch ended) and keep only the jobs
    that ended before it did."""
    from pixmesh import Client

    samples = []
    with Client(target, key) as client:
        for i in range(n):
            if running is not None and not running():
                break
            data = photo((640, 480), seed=20_000 + seed0 + i) if fresh else image
            if i and gap:
                time.sleep(gap)
            start = time.time_ns()
            uploaded = client.upload(data)
            up_ns = time.time_ns()
            job = client.create_job(
                uploaded.image_id, ["resize=320x", "convert=webp"], f"i{time.time()}{i}"
            )
            created_ns = time.time_ns()
            for update in client.watch_job(job.job_id):
                job = update
            assert job.state == job.SUCCEEDED, job
            if running is not None and not running():
                break
            samples.append(Sample(job.job_id, len(data), start, up_ns, created_ns, time.time_ns()))
    return samples


# The hops of an interactive job, from the client's timestamps and the stack's spans (the OTLP
# sink's file), in the order a job takes them; a name with "." is a part of the hop before it.
HOPS = (
    "upload",  # client: UploadImage through Envoy and the gateway
    "upload.gateway",  # the gateway's UploadImage span
    "upload.S3",  # the gateway's S3 calls in it (HEAD of a stored input, or the PUT)
    "create",  # client: CreateJob through Envoy, the gateway and the jobs service
    "to worker",  # the jobs service's CreateJob answered -> imaging's consumer span starts
    # (outbox relay, NATS, the worker's pull and handler slot)
    "worker",  # imaging's consumer span (input, pipeline or stored output, PUT, publish)
    "worker.S3",  # imaging's S3 calls in it (the input's GET, the stored output's HEAD, the
    # output's PUT)
    "worker.pipeline",  # imaging's pipeline span (to a pipeline process and back; 0 when the
    # output was found stored)
    "worker.steps",  # the pipeline's steps in the child (its events' durations: the pixels)
    "to jobs",  # imaging published TaskCompleted -> the jobs service's consumer span starts
    "apply",  # the jobs service applying the event (its consumer span)
    "to client",  # the event applied -> the client sees the terminal state (JobStateChanged,
    # WatchJob through the jobs service, the gateway and Envoy)
)


def _dur(span: dict[str, Any]) -> int:
    return int(span["end_ns"]) - int(span["start_ns"])


def hops(samples: Sequence[Sample], spans: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Milliseconds per hop for each sample whose spans are all there. The upload's trace is
    the Envoy UploadImage span that started in the sample's upload with its request size (the
    batch's uploads run beside it, other sizes)."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        traces.setdefault(s["trace_id"], []).append(s)
    job_trace: dict[str, str] = {}
    envoy_uploads = []
    for trace_id, group in traces.items():
        for s in group:
            job = s["attributes"].get("pixmesh.job_id")
            if job and s["service"] == "pixmesh-imaging" and s["kind"] == "CONSUMER":
                job_trace[job] = trace_id
            if (
                s["service"] == "pixmesh-envoy"
                and s["kind"] == "SERVER"
                and s["name"].endswith("/UploadImage")
            ):
                envoy_uploads.append(s)

    def one(group: list[dict[str, Any]], service: str, pred: Any) -> dict[str, Any] | None:
        return next((s for s in group if s["service"] == service and pred(s)), None)

    out = []
    for sample in samples:
        group = traces.get(job_trace.get(sample.job_id, ""), [])
        create = one(group, "pixmesh-jobs", lambda s: s["name"].endswith("JobsService/CreateJob"))
        worker = one(group, "pixmesh-imaging", lambda s: s["kind"] == "CONSUMER")
        publish = one(group, "pixmesh-imaging", lambda s: s["name"].startswith("publish "))
        pipeline = one(group, "pixmesh-imaging", lambda s: s["name"] == "imaging.pipeline")
        apply = one(
            group, "pixmesh-jobs", lambda s: s["name"] == "process pixmesh.event.task.completed"
        )
        envoy = next(
            (
                s
                for s in envoy_uploads
                if sample.start_ns <= s["start_ns"] <= sample.uploaded_ns
                and 0 <= int(s["attributes"].get("request_size", -1)) - sample.size < 4096
            ),
            None,
        )
        if None in (create, worker, publish, apply, envoy):
            continue
        assert create and worker and publish and apply and envoy
        up = traces[envoy["trace_id"]]
        gateway = one(up, "pixmesh-gateway", lambda s: s["kind"] == "SERVER")
        if gateway is None:
            continue
        ns = [
            sample.uploaded_ns - sample.start_ns,
            _dur(gateway),
            sum(_dur(s) for s in up if s["service"] == "pixmesh-gateway" and "S3." in s["name"]),
            sample.created_ns - sample.uploaded_ns,
            worker["start_ns"] - create["end_ns"],
            _dur(worker),
            sum(_dur(s) for s in group if s["service"] == "pixmesh-imaging" and "S3." in s["name"]),
            _dur(pipeline) if pipeline else 0,
            int(
                sum(
                    e["attributes"].get("pixmesh.duration_ms", 0.0) * 1e6
                    for e in (pipeline or {}).get("events", [])
                    if e["name"] != "imaging.fetch"
                )
            ),
            apply["start_ns"] - publish["end_ns"],
            _dur(apply),
            sample.end_ns - apply["end_ns"],
        ]
        out.append({name: v / 1e6 for name, v in zip(HOPS, ns, strict=True)})
    return out


def print_hops(idle: Sequence[Sample], busy: Sequence[Sample], trace_file: Path) -> None:
    from deploy.observability.otlp_sink import rotated

    spans = [r for f in rotated(trace_file, keep=9) for r in read_spans(f)]
    rows = {"idle": hops(idle, spans), "batch": hops(busy, spans)}
    ran = {k: sum(1 for r in v if r["worker.pipeline"] > 0) for k, v in rows.items()}
    print(
        f"interactive hops (ms, p50 / p95; spans found for {len(rows['idle'])} / "
        f"{len(rows['batch'])} jobs, a pipeline ran for {ran['idle']} / {ran['batch']}):"
    )
    for name in HOPS:
        idle_v = [r[name] for r in rows["idle"]]
        busy_v = [r[name] for r in rows["batch"]]
        if not idle_v or not busy_v:
            continue
        label = f"  of which {name.partition('.')[2]}" if "." in name else name
        print(
            f"  {label:<18} idle {statistics.median(idle_v):6.1f} / {pct(idle_v, 0.95):6.1f}"
            f"   batch {statistics.median(busy_v):6.1f} / {pct(busy_v, 0.95):6.1f}"
        )
    # Where the slowest jobs of the batch round spent their time.
    for row in sorted(rows["batch"], key=lambda r: -sum(r[n] for n in HOPS if "." not in n))[:3]:
        print("  a slow one: " + ", ".join(f"{n} {row[n]:.0f}" for n in HOPS))


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def nearest_rank(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--max-mp", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--interactive", type=int, default=0, metavar="N")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="each interactive job a new image (its output computed, not found stored)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds between interactive jobs, both rounds (spread them over the batch)",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        help="keep the photos here and use them again if the folder holds `count` files "
        "(they take minutes to make)",
    )
    parser.add_argument(
        "--no-bare", action="store_true", help="skip the bare loop (no ratio): the lane alone"
    )
    parser.add_argument(
        "--group-nice",
        action="append",
        default=[],
        metavar="NAME=N",
        help="an experiment: give a process's scheduling group (its session's autogroup; each "
        "server and service runs in a session of its own) nice N after the stack starts, "
        "e.g. metadata=19",
    )
    parser.add_argument(
        "--lane-backlog", type=int, default=0, help="PIXMESH_BATCH_LANE_BACKLOG (0: the default)"
    )
    args = parser.parse_args(argv)

    from deploy.local import SERVICES, Ports, Stack

    work = Path(tempfile.mkdtemp(prefix="pixmesh-bench-batch-"))
    folder = args.folder or work / "photos"
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if args.folder else []
    if len(files) != args.count:
        shutil.rmtree(folder, ignore_errors=True)
        make_folder(folder, args.count, args.max_mp)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(f.stat().st_size for f in files)
    cores = os.cpu_count() or 1
    print(f"{len(files)} files, {total / 1e6:.1f} MB, {cores} cores, load {os.getloadavg()}")

    bare_s, bare_out, bare_cpu = run_bare(files) if not args.no_bare else (0.0, 0, 0.0)
    if not args.no_bare:
        print(
            f"bare Pillow pool: {bare_s:.1f} s, {total / 1e6 / bare_s:.2f} MB/s "
            f"({total / 1e6 / bare_s / cores:.2f} MB/s per core), "
            f"{len(files) / bare_s:.2f} images/s, out {bare_out / 1e6:.1f} MB; "
            f"CPU {bare_cpu:.1f} s ({bare_cpu / len(files) * 1000:.0f} ms per image)"
        )

    env = {"jobs": {"PIXMESH_BATCH_LANE_BACKLOG": str(args.lane_backlog)}}
    stack = Stack(
        work / "stack", Ports.free(), durable=False, service_env=env if args.lane_backlog else None
    )
    try:
        stack.start_infra()
        stack.start_envoy()
        stack.start_services(SERVICES)
        key = stack.create_api_key("bench")
        for item in args.group_nice:
            name, _, nice = item.partition("=")
            Path(f"/proc/{stack.pids()[name]}/autogroup").write_text(nice)
            print(f"{name}: {Path(f'/proc/{stack.pids()[name]}/autogroup').read_text().strip()}")
        env = {**os.environ, "PIXMESH_TARGET": stack.grpc_target, "PIXMESH_API_KEY": key}
        small = photo((640, 480), seed=10_000)
        idle: list[Sample] = []
        if args.interactive:
            # One job first, not counted: a fresh stack's first request pays for cold paths (the
            # gateway's first S3 PUT alone took ~230 ms against ~15 after), and with 20 jobs the
            # p95 is the slowest one.
            interactive(stack.grpc_target, key, 1, small)
            idle = interactive(
                stack.grpc_target, key, args.interactive, small, args.fresh, gap=args.gap
            )
        sampler = RssSampler(stack.pids())
        sampler.start()
        cpu_before = cpu_snapshot(stack.pids())
        out = work / "out"
        cli = [sys.executable, "-m", "pixmesh.cli", "batch", str(folder), "-o", str(out)]
        cli += ["--op", "convert=webp:80", "--concurrency", str(args.concurrency), "--json"]
        start = time.perf_counter()
        proc = subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        sampler.pids["cli"] = proc.pid
        busy: list[Sample] = []
        if args.interactive:
            time.sleep(3.0)  # the batch under way
            nices = nice_values(stack.pids()["imaging"])
            busy = interactive(
                stack.grpc_target,
                key,
                args.interactive,
                small,
                args.fresh,
                seed0=args.interactive,
                gap=args.gap,
                running=lambda: proc.poll() is None,
            )
        cli_usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout, _ = proc.communicate(timeout=3600)
        wall = time.perf_counter() - start
        cpu_after = cpu_snapshot(stack.pids())
        cli_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = {
            name: cpu_after.get(name, (0.0, 0.0))[0] - cpu_before[name][0] for name in cpu_before
        }
        kids = {
            name: cpu_after.get(name, (0.0, 0.0))[1] - cpu_before[name][1] for name in cpu_before
        }
        cpu = {name: own[name] + kids[name] for name in cpu_before}
        cpu["cli"] = (cli_usage.ru_utime - cli_usage_before.ru_utime) + (
            cli_usage.ru_stime - cli_usage_before.ru_stime
        )
        sampler.halt.set()
        sampler.join()
        summary = json.loads(stdout)
        rate = total / 1e6 / wall
        print(
            f"pixmesh batch: {wall:.1f} s, {rate:.2f} MB/s ({rate / cores:.2f} MB/s per core), "
            f"{len(files) / wall:.2f} images/s; {summary['succeeded']} succeeded, "
            f"{summary['failed']} failed; out {summary['bytes_out'] / 1e6:.1f} MB; "
            f"exit {proc.returncode}"
        )
        if not args.no_bare:
            print(f"ratio pixmesh / bare (MB/s): {bare_s / wall:.2f}x")
        print(f"load after: {os.getloadavg()}")
        print(
            "peak RSS (MB): "
            + ", ".join(f"{name} {rss / 2**20:.0f}" for name, rss in sorted(sampler.peak.items()))
        )
        n = len(files)
        mesh_cpu = sum(cpu.values())
        print(
            "CPU over the batch phase (s; ms per image): "
            + ", ".join(
                f"{name} {sec:.1f} ({sec / n * 1000:.0f})"
                for name, sec in sorted(cpu.items(), key=lambda kv: -kv[1])
            )
        )
        print(
            "  of which child processes (s): "
            + ", ".join(f"{name} {sec:.1f}" for name, sec in sorted(kids.items()) if sec >= 0.05)
        )
        print(
            f"CPU total: pixmesh {mesh_cpu:.1f} s ({mesh_cpu / n * 1000:.0f} ms per image), "
            f"bare {bare_cpu:.1f} s ({bare_cpu / n * 1000:.0f} ms per image), "
            f"ratio bare / pixmesh {bare_cpu / max(mesh_cpu, 1e-9):.2f}x"
            + (" (interactive jobs included)" if args.interactive else "")
        )
        if args.interactive:
            idle_s = [x.seconds for x in idle]
            busy_s = [x.seconds for x in busy]
            print(
                f"interactive job (640x480 -> 320 px WebP), {len(idle)} idle / {len(busy)} "
                f"during the batch, one after another"
                + (f" {args.gap:g} s apart" if args.gap else "")
                + (", each a new image" if args.fresh else "")
                + f": idle p50 {statistics.median(idle_s) * 1000:.0f} ms "
                f"p95 {pct(idle_s, 0.95) * 1000:.0f} ms; "
                f"during the batch p50 {statistics.median(busy_s) * 1000:.0f} ms "
                f"p95 {pct(busy_s, 0.95) * 1000:.0f} ms "
                f"(x{pct(busy_s, 0.95) / max(pct(idle_s, 0.95), 1e-9):.2f})"
            )
            # pct's p95 is s[int(0.95 n)]: with 20 jobs the slowest one. The nearest-rank p95
            # (the ceil(0.95 n)-th, the 19th of 20) beside it, and the slowest, for the noise.
            print(
                f"  nearest-rank p95: idle {nearest_rank(idle_s, 0.95) * 1000:.0f} ms, "
                f"batch {nearest_rank(busy_s, 0.95) * 1000:.0f} ms "
                f"(x{nearest_rank(busy_s, 0.95) / max(nearest_rank(idle_s, 0.95), 1e-9):.2f}); "
                f"slowest: idle {max(idle_s) * 1000:.0f} ms, batch {max(busy_s) * 1000:.0f} ms"
            )
            time.sleep(1.5)  # the services export their spans every second
            print_hops(idle, busy, stack.trace_file)
            print(f"imaging's forkserver and pipeline processes' nice values in the batch: {nices}")
    finally:
        stack.stop()
        # The photos, the outputs and the stack's data: ~1 GB for the folder, per run.
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
