"""Job registry benchmark: CPU of the jobs service per job. It prints figures, it does not pass
or fail. Results: BENCHMARKS.md.

    .venv/bin/python -m bench.jobs                        # 4 rounds of 100 jobs, about a minute
    .venv/bin/python -m bench.jobs --renditions 3         # jobs with three renditions
    .venv/bin/python -m bench.jobs --profile /tmp/jobs.prof   # the service under cProfile

A local stack started like tests/conftest.py does (free loopback ports, `durable=False`, the
OTLP sink receiving the service's spans), with only NATS, Postgres, Valkey, SeaweedFS, the sink
and the jobs service: no gateway, no workers. This process plays both sides of the registry:

  clients  N concurrent loops (as the gateway does for REST `POST /v1/jobs` + the watch stream):
           gRPC CreateJob straight to the jobs service (one imaging stage: resize + convert,
           or with --renditions K that many renditions), then WatchJob until SUCCEEDED.
  worker   a pull consumer on pixmesh.task.imaging that answers each task the way
           services/runtime/worker.py does: --work-ms of "work", then TaskCompleted (with one
           rendition output per rendition, and the attempt), preceded by a TaskStarted when the
           work lasts --started-delay-ms or more (the worker's PIXMESH_STARTED_DELAY_S, 250 ms:
           a 50 ms task sends its completion alone; --started-delay-ms 0 sends both, as every
           task did before), published to JetStream with their Nats-Msg-Id.

So each job costs the service what it costs in the mesh: CreateJob, its task events through its
durable consumer (one for a task under --started-delay-ms, two above it), the outbox relay (the
task, then a JobStateChanged per event applied: none for the creation), a WatchJob stream. The
figures are the CPU time (user + system) of the jobs service process (and of its main thread,
the event loop, apart: the rest is gRPC's and the span exporter's threads), of Postgres (the
postmaster and its backends) and of the OTLP sink, read with psutil around each round, divided
by the jobs of the round. After a warm-up round, --rounds rounds of --jobs jobs; the median
round is printed with the spread. --profile runs the service under cProfile (stdlib, CPU time,
main thread only) and prints its most expensive functions after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from deploy.local import Ports, Stack
from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from pixmesh.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from services.runtime import bus as busmod
from services.runtime import trust
from services.runtime.bus import Bus

TENANT = "bench"
SUCCEEDED = job_pb2.Job.SUCCEEDED


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by this process and all its descendants."""
    total = 0.0
    with suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


def operations() -> list[operations_pb2.Operation]:
    return [
        operations_pb2.Operation(resize=operations_pb2.Resize(width=800)),
        operations_pb2.Operation(convert=operations_pb2.Convert(format=image_pb2.WEBP)),
    ]


def renditions(count: int) -> list[operations_pb2.Rendition]:
    return [
        operations_pb2.Rendition(
            name=f"w{200 * (i + 1)}",
            operations=[
                operations_pb2.Operation(resize=operations_pb2.Resize(width=200 * (i + 1)))
            ],
        )
        for i in range(count)
    ]


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of the process's main thread (the event loop), not gRPC's or the exporter's."""
    with suppress(psutil.NoSuchProcess):
        for t in psutil.Process(pid).threads():
            if t.id == pid:
                return float(t.user_time + t.system_time)
    return 0.0


def source_image(n: int) -> image_pb2.Image:
    sha = uuid.UUID(int=n).hex * 2
    return image_pb2.Image(
        image_id=f"img_{sha[:32]}",
        sha256=sha,
        format=image_pb2.JPEG,
        width=4000,
        height=3000,
        size_bytes=2_200_000,
    )


def fake_output(key: str) -> job_pb2.Output:
    return job_pb2.Output(
        format=image_pb2.WEBP,
        content_type="image/webp",
        width=800,
        height=600,
        size_bytes=51_234,
        sha256=key[-64:].rjust(64, "0"),
    )


async def fake_worker(
    bus: Bus, work_s: float, stop: asyncio.Event, started_delay_s: float = 0.25
) -> None:
    """Answer imaging tasks like services/runtime/worker.py: (started,) work, completed."""
    durable = "bench-imaging"
    await bus.ensure_consumer(
        busmod.TASKS_STREAM,
        durable,
        busmod.task_subject("imaging"),
        ack_wait=30.0,
        max_deliver=3,
        max_ack_pending=256,
    )
    psub = await bus.js.pull_subscribe_bind(durable, busmod.TASKS_STREAM)
    inflight: set[asyncio.Task[None]] = set()

    async def answer(data: bytes, ack: asyncio.Future[None] | None) -> None:
        task = events_pb2.Task.FromString(data)

        async def emit(suffix: str, **outcome: object) -> None:
            event_id = f"{task.task_id}.{suffix}"
            event = events_pb2.TaskEvent(
                event_id=event_id,
                task_id=task.task_id,
                job_id=task.job_id,
                stage_index=task.stage_index,
                **outcome,  # type: ignore[arg-type]
            )
            event.time.GetCurrentTime()
            kind = suffix.split(".", 1)[0]
            await bus.js.publish(
                busmod.task_event_subject(kind),
                event.SerializeToString(),
                headers={"Nats-Msg-Id": event_id},
            )

        if work_s >= started_delay_s:
            await emit("started.1", started=events_pb2.TaskStarted(attempt=1))
        await asyncio.sleep(work_s)
        completed = events_pb2.TaskCompleted(attempt=1)
        if task.renditions:
            for r in task.renditions:
                key = f"outputs/{uuid.uuid4().hex}{r.name}.webp"
                completed.rendition_outputs.add(key=key, output=fake_output(key))
        else:
            completed.output_key = f"outputs/{uuid.uuid4().hex}.webp"
            completed.output.CopyFrom(fake_output(completed.output_key))
        await emit("completed", completed=completed)

    while not stop.is_set():
        try:
            msgs = await psub.fetch(64, timeout=0.5)
        except TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
            t = asyncio.create_task(answer(msg.data, None))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
    for t in inflight:
        t.cancel()


async def one_job(
    stub: jobs_pb2_grpc.JobsServiceStub, n: int, ops: Sequence[operations_pb2.Operation], k: int
) -> None:
    created = await stub.CreateJob(
        jobs_pb2.CreateJobRequest(
            tenant_id=TENANT, image=source_image(n), operations=ops, renditions=renditions(k)
        )
    )
    job_id = created.job.job_id
    async for update in stub.WatchJob(jobs_pb2.WatchJobRequest(tenant_id=TENANT, job_id=job_id)):
        if update.job.state == SUCCEEDED:
            if len(update.job.outputs) != max(k, 1):
                raise AssertionError(f"{job_id}: {len(update.job.outputs)} outputs")
            return
        if update.job.state in (job_pb2.Job.FAILED, job_pb2.Job.CANCELLED):
            raise AssertionError(f"{job_id} ended {update.job.state}: {update.job.error}")
    raise AssertionError(f"{job_id}: watch ended early")


async def run_round(
    stub: jobs_pb2_grpc.JobsServiceStub, jobs: int, clients: int, start: int, k: int
) -> float:
    ops = operations()
    counter = iter(range(start, start + jobs))

    async def client() -> None:
        for n in counter:
            await one_job(stub, n, ops, k)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - began


@dataclass
class Round:
    seconds: float
    jobs_cpu: float
    loop_cpu: float
    pg_cpu: float
    sink_cpu: float
    jobs: int

    def ms(self, cpu: float) -> float:
        return cpu / self.jobs * 1000


def start_profiled_jobs(stack: Stack, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **stack.service_env("jobs")}
    log = stack.log_path("jobs").open("ab")
    # CPU time, not wall time: the service mostly waits, and waiting is not what we look for.
    code = (
        "import cProfile, runpy, time\n"
        "p = cProfile.Profile(time.process_time)\n"
        "p.enable()\n"
        "try:\n"
        "    runpy.run_module('services.jobs', run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        "    p.disable()\n"
        f"    p.dump_stats({str(out)!r})\n"
    )
    argv = [sys.executable, "-c", code]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc


async def wait_serving(target: str, timeout: float = 60.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with suppress(grpc.aio.AioRpcError):
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > end:
                raise TimeoutError(f"jobs service at {target} never became SERVING")
            await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace, stack: Stack, jobs_pid: int) -> list[Round]:
    bus = await Bus.connect(stack.nats_url, "bench-jobs")
    stop = asyncio.Event()
    worker = asyncio.create_task(
        fake_worker(bus, args.work_ms / 1000, stop, args.started_delay_ms / 1000)
    )
    pids = stack.pids()
    rounds: list[Round] = []
    try:
        # The jobs service only takes calls signed with the mesh's service token.
        trust.configure(stack.service_token_secret(), "bench")
        async with grpc.aio.insecure_channel(
            stack.service_addr("jobs"), interceptors=trust.client_interceptors()
        ) as channel:
            stub = jobs_pb2_grpc.JobsServiceStub(channel)
            n = 0
            await run_round(stub, args.warmup, args.clients, n, args.renditions)
            n += args.warmup
            for _ in range(args.rounds):
                before = (
                    tree_cpu(jobs_pid),
                    main_thread_cpu(jobs_pid),
                    tree_cpu(pids["postgres"]),
                    tree_cpu(pids["otlp-sink"]),
                )
                seconds = await run_round(stub, args.jobs, args.clients, n, args.renditions)
                # Let the relay publish the last events and the sink take the last spans.
                await asyncio.sleep(0.5)
                after = (
                    tree_cpu(jobs_pid),
                    main_thread_cpu(jobs_pid),
                    tree_cpu(pids["postgres"]),
                    tree_cpu(pids["otlp-sink"]),
                )
                n += args.jobs
                used = [a - b for a, b in zip(after, before, strict=True)]
                rounds.append(Round(seconds, *used, args.jobs))
                r = rounds[-1]
                print(
                    f"  round {len(rounds)}: {args.jobs / seconds:6.1f} jobs/s, jobs service "
                    f"{r.ms(r.jobs_cpu):5.1f} ms/job, postgres {r.ms(r.pg_cpu):5.1f}, "
                    f"otlp-sink {r.ms(r.sink_cpu):5.1f}",
                    flush=True,
                )
    finally:
        stop.set()
        await worker
        await bus.close()
    return rounds


def report(args: argparse.Namespace, rounds: list[Round]) -> None:
    def line(label: str, values: list[float], unit: str) -> str:
        med = statistics.median(values)
        return (
            f"    {label:<34} {med:7.1f} {unit}  (rounds: {min(values):.1f} .. {max(values):.1f})"
        )

    print(
        f"\npixmesh jobs bench: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    kind = f"{args.renditions} renditions" if args.renditions else "one output"
    print(
        f"  {args.rounds} rounds of {args.jobs} jobs ({kind}), {args.clients} clients, "
        f"fake worker {args.work_ms:.0f} ms/task, TaskStarted "
        f"{'sent' if args.work_ms >= args.started_delay_ms else 'not sent'}; median round:"
    )
    events = 2 if args.work_ms >= args.started_delay_ms else 1
    print(line("jobs/s", [r.jobs / r.seconds for r in rounds], "   "))
    print(line("task events applied/s", [events * r.jobs / r.seconds for r in rounds], "   "))
    print(line("jobs service CPU per job", [r.ms(r.jobs_cpu) for r in rounds], "ms"))
    print(line("  of which its event loop thread", [r.ms(r.loop_cpu) for r in rounds], "ms"))
    print(line("postgres CPU per job", [r.ms(r.pg_cpu) for r in rounds], "ms"))
    print(line("otlp-sink CPU per job", [r.ms(r.sink_cpu) for r in rounds], "ms"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--work-ms", type=float, default=50.0, help="fake task duration")
    parser.add_argument(
        "--started-delay-ms",
        type=float,
        default=250.0,
        help="a task this long or longer sends TaskStarted first (0: every task)",
    )
    parser.add_argument("--renditions", type=int, default=0, help="renditions per job")
    parser.add_argument("--profile", type=Path, help="run the service under cProfile, to here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pixmesh-bench-jobs-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, True)
        stack = Stack(work / "stack", Ports.free(), envoy=False, services=("jobs",), durable=False)
        cleanup.callback(stack.stop)
        stack.start_infra()
        profiled: subprocess.Popen[bytes] | None = None
        if args.profile:
            profiled = start_profiled_jobs(stack, args.profile.resolve())
            cleanup.callback(profiled.kill)
            asyncio.run(wait_serving(stack.service_addr("jobs")))
            jobs_pid = profiled.pid
        else:
            stack.start_services(["jobs"])
            jobs_pid = stack.pids()["jobs"]
        rounds = asyncio.run(bench(args, stack, jobs_pid))
        report(args, rounds)
        if profiled is not None:
            profiled.send_signal(signal.SIGTERM)
            profiled.wait(timeout=60)
            print(f"\ncProfile of the jobs service (whole run), {args.profile}:")
            stats = pstats.Stats(str(args.profile))
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
