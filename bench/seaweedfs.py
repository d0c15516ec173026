"""SeaweedFS memory and open files against the data stored: it prints figures, it does not pass
or fail. Results: BENCHMARKS.md (issue 16).

    .venv/bin/python -m bench.seaweedfs                       # 4,000 objects of 64 KiB per variant
    .venv/bin/python -m bench.seaweedfs --objects 8000 --size-kib 32
    .venv/bin/python -m bench.seaweedfs --memory off,256MiB,320MiB --rounds 2   # memory settings
    .venv/bin/python -m bench.seaweedfs --churn 32 --rate 20 --horizon-s 60      # disk under churn

For each variant of the local stack's `weed mini` flags (the old 16 MB volumes with the in-memory
needle map; the current ones, deploy/local/servers.py) it starts a SeaweedFS of its own on free
ports in a temporary folder, PUTs N incompressible objects through S3 (boto3, 8 threads), and
samples the server's RSS, open file descriptors and volume count at 0, 25, 50, 75 and 100% of
the data, then again after a restart on the same data. A server whose memory and files follow the
data grows from row to row; one sized for it stays flat.

`--memory` compares Go memory settings of the same server (the stack's flags) instead: each
candidate (`off`, a GOMEMLIMIT such as `320MiB`, or `GOGC=50`, `GOMEMLIMIT=320MiB+GOGC=150`)
gets a fresh server that takes the bulk bench's traffic in miniature: `--big-objects` objects of
`--big-mib` MiB (default 90 x 4 MiB, the 366 MB batch's size) PUT by 8 threads, then each GET
twice. It prints the server's peak RSS (VmHWM), its CPU seconds (user + system, /proc) and the
driver's wall time; candidates run in turn, `--rounds` times, so that each round compares them
at the same machine load.

`--churn MINUTES` measures what retention leaves on disk: a server with the stack's flags takes
`--rate` PUTs a second and each object is deleted `--horizon-s` after its PUT (one multi-delete
per pass, as the tenant retention deletes); every 30 s it prints the bytes written, the bytes
live and the data folder. A deleted object's bytes stay in its volume file until the master
vacuums the volume (`--vacuum-s`, weed's default 840 s), so the folder is a sawtooth over the
bytes live.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import httpx
from botocore.config import Config

from deploy.local import Ports
from deploy.local.servers import S3_ACCESS_KEY, S3_SECRET_KEY, s3_identities, seaweedfs_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mypy_boto3_s3 import S3Client

VARIANTS = {"16MB-memory": (16, "memory"), "1024MB-leveldb": (1024, "leveldb")}


def _sample(pid: int, data_dir: Path) -> tuple[float, int, int]:
    """RSS (MB), open fds and volume files of the server."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    volumes = len(list(data_dir.rglob("*.dat")))
    return rss_kb / 1024, fds, volumes


def _start(
    variant: str,
    data_dir: Path,
    ports: Ports,
    log: Path,
    go_env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    size_mb, index = VARIANTS[variant]
    identities = data_dir.parent / "identities.json"
    identities.write_text(s3_identities())
    spec = seaweedfs_spec(ports, data_dir, identities, volume_size_mb=size_mb, volume_index=index)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(spec.env or os.environ)
    if go_env is not None:  # exactly these Go settings, whatever the stack's default is
        env = {k: v for k, v in env.items() if k not in ("GOMEMLIMIT", "GOGC")} | go_env
    argv = [*spec.argv, *extra]
    proc = subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{ports.s3}/healthz", timeout=1).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _s3(ports: Ports) -> S3Client:
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{ports.s3}",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 10, "mode": "standard"}),
    )
    for _ in range(50):
        try:
            s3.create_bucket(Bucket="bench")
            break
        except Exception:
            time.sleep(0.5)
    return s3


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _go_env(candidate: str) -> dict[str, str]:
    """`off` -> {}; `320MiB` -> GOMEMLIMIT; `GOGC=50+GOMEMLIMIT=320MiB` -> both."""
    if candidate == "off":
        return {}
    if "=" not in candidate:
        return {"GOMEMLIMIT": candidate}
    return dict(part.split("=", 1) for part in candidate.split("+"))


def memory(candidate: str, objects: int, size: int) -> tuple[float, float, float]:
    """Peak RSS (MB), CPU seconds and wall seconds of a fresh server under the PUT+GET load."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-weed-mem-"))
    ports = Ports.free()
    proc = _start("1024MB-leveldb", tmp / "data", ports, tmp / "weed.log", _go_env(candidate))
    try:
        s3 = _s3(ports)
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        bodies = [os.urandom(size) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:

            def put(i: int) -> None:
                s3.put_object(Bucket="bench", Key=f"inputs/{i:08d}", Body=bodies[i % 8])

            def get(i: int) -> None:
                s3.get_object(Bucket="bench", Key=f"inputs/{i % objects:08d}")["Body"].read()

            list(pool.map(put, range(objects)))
            list(pool.map(get, range(2 * objects)))
        return _peak_rss_mb(proc.pid), _cpu_s(proc.pid) - cpu0, time.monotonic() - t0
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def run(variant: str, objects: int, size: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-weed-{variant}-"))
    ports = Ports.free()
    data_dir = tmp / "data"
    proc = _start(variant, data_dir, ports, tmp / "weed.log")
    s3 = _s3(ports)
    print(f"\n{variant}: {objects} objects of {size // 1024} KiB")
    print(f"{'stored MB':>10} {'RSS MB':>8} {'fds':>5} {'volumes':>8}")
    try:
        rss, fds, vols = _sample(proc.pid, data_dir)
        print(f"{0:>10.0f} {rss:>8.0f} {fds:>5} {vols:>8}")
        quarter = objects // 4
        with ThreadPoolExecutor(8) as pool:
            for q in range(4):

                def put(i: int) -> None:
                    s3.put_object(Bucket="bench", Key=f"outputs/{i:08d}", Body=os.urandom(size))

                list(pool.map(put, range(q * quarter, (q + 1) * quarter)))
                time.sleep(2)
                rss, fds, vols = _sample(proc.pid, data_dir)
                stored = (q + 1) * quarter * size / 1e6
                print(f"{stored:>10.0f} {rss:>8.0f} {fds:>5} {vols:>8}")
        _stop(proc)
        proc = _start(variant, data_dir, ports, tmp / "weed.log")
        time.sleep(3)
        rss, fds, vols = _sample(proc.pid, data_dir)
        print(f"{'restarted':>10} {rss:>8.0f} {fds:>5} {vols:>8}")
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def churn(minutes: float, rate: float, size: int, horizon_s: float, vacuum_s: int) -> None:
    """What retention leaves on disk: PUT `rate` objects a second, DELETE each `horizon_s` after
    its PUT (as the tenant retention does), and print the data folder against the bytes live."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-weed-churn-"))
    ports = Ports.free()
    data_dir = tmp / "data"
    extra = [f"-master.vacuumIntervalSeconds={vacuum_s}"] if vacuum_s else []
    proc = _start("1024MB-leveldb", data_dir, ports, tmp / "weed.log", extra=extra)
    s3 = _s3(ports)
    body = os.urandom(size)
    print(f"\nchurn: {rate:g} PUT/s of {size // 1024} KiB, each deleted {horizon_s:g} s later,")
    print(f"vacuum every {vacuum_s or 840} s (garbage threshold 0.3), {minutes:g} minutes")
    print(f"{'min':>5} {'written MB':>10} {'live MB':>8} {'folder MB':>9} {'RSS MB':>7} {'fds':>4}")
    live: list[tuple[float, str]] = []
    written = 0
    start = time.monotonic()
    next_sample = start
    try:
        with ThreadPoolExecutor(8) as pool:
            i = 0
            while (now := time.monotonic()) < start + minutes * 60:
                due = int((now - start) * rate) - i
                keys = [f"outputs/{k:08d}" for k in range(i, i + due)]
                i += due
                list(pool.map(lambda k: s3.put_object(Bucket="bench", Key=k, Body=body), keys))
                written += len(keys) * size
                live.extend((now, k) for k in keys)
                old = [k for t, k in live if t < now - horizon_s]
                live = live[len(old) :]
                for chunk in range(0, len(old), 1000):
                    batch = [{"Key": k} for k in old[chunk : chunk + 1000]]
                    s3.delete_objects(Bucket="bench", Delete={"Objects": batch})
                if now >= next_sample:
                    rss, fds, _ = _sample(proc.pid, data_dir)
                    folder = sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file())
                    print(
                        f"{(now - start) / 60:>5.1f} {written / 1e6:>10.0f} "
                        f"{len(live) * size / 1e6:>8.0f} {folder / 1e6:>9.0f} {rss:>7.0f} {fds:>4}",
                        flush=True,
                    )
                    next_sample += 30
                time.sleep(0.2)
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seaweedfs")
    parser.add_argument("--objects", type=int, default=4000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--variant", choices=[*VARIANTS, "all"], default="all")
    parser.add_argument("--memory", default="", help="Go memory candidates, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--big-objects", type=int, default=90)
    parser.add_argument("--big-mib", type=int, default=4)
    parser.add_argument("--churn", type=float, default=0, help="minutes of PUT + DELETE")
    parser.add_argument("--rate", type=float, default=20, help="--churn: PUTs per second")
    parser.add_argument("--horizon-s", type=float, default=60, help="--churn: object lifetime")
    parser.add_argument("--vacuum-s", type=int, default=0, help="--churn: 0 is weed's default")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    if args.churn:
        churn(args.churn, args.rate, args.size_kib * 1024, args.horizon_s, args.vacuum_s)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    if args.memory:
        size = args.big_mib * 1024 * 1024
        print(f"PUT {args.big_objects} x {args.big_mib} MiB (8 threads), then GET each twice")
        print(f"{'round':>5} {'candidate':<28} {'peak RSS MB':>11} {'CPU s':>6} {'wall s':>6} load")
        for r in range(args.rounds):
            for candidate in args.memory.split(","):
                peak, cpu, wall = memory(candidate, args.big_objects, size)
                load = os.getloadavg()[0]
                print(
                    f"{r + 1:>5} {candidate:<28} {peak:>11.0f} {cpu:>6.1f} {wall:>6.1f} {load:.2f}"
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    for variant in VARIANTS if args.variant == "all" else [args.variant]:
        run(variant, args.objects, args.size_kib * 1024)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
