"""What deleting costs: CPU per image (or job) of one retention pass over N due images.

    .venv/bin/python -m bench.retention --images 300
    .venv/bin/python -m bench.retention --images 300 --passes jobs,images

Starts a stack (bench.soak's way: free loopback ports, a temporary folder, Envoy and the five
services), uploads N small JPEGs over REST and runs one job on each (resize -> PNG), waits for
the uploads' metadata, ages the images by three days in Postgres and sets the tenant's sources
retention to two days (with `--passes jobs,images`, first the jobs' finished time by three days
and the outputs' retention to one day, and a pass; then the images, and a second pass). It runs
each pass in this process with the gateway's own code (`Deletion.apply_retention`, what the
gateway's retention loop calls) and prints the CPU seconds each process used during it: this
process (the gateway's part: its RPCs, S3 calls and Postgres statements) and every process of
the stack (jobs, metadata, Postgres with its backends, SeaweedFS, ...), per image (or job)
deleted. CPU time, not wall time, so a loaded machine moves it little. Run it on two trees to
compare them (BENCHMARKS.md, "Soak and retention")."""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench.soak import new_jpeg, process_tree
from deploy.local import SERVICES, Ports, Stack
from pixmesh.jobs.v1 import jobs_pb2_grpc
from pixmesh.metadata.v1 import metadata_pb2_grpc
from services.gateway.deletion import Deletion
from services.gateway.repository import GatewayRepository
from services.runtime import db
from services.runtime.storage import Storage

TENANT = "retention-bench"
JOB = {"operations": [{"resize": {"width": 40, "height": 30}}, {"convert": {"format": "PNG"}}]}


async def fill(stack: Stack, api_key: str, n: int, seed: int) -> list[str]:
    """N images with one finished job each; their sha256s."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(
        base_url=stack.rest_url, headers={"authorization": f"Bearer {api_key}"}, timeout=120.0
    ) as http:

        async def one() -> str:
            async with sem:
                resp = await http.post(
                    "/v1/images", content=new_jpeg(rng), headers={"content-type": "image/jpeg"}
                )
                resp.raise_for_status()
                image = resp.json()["image"]
                resp = await http.post("/v1/jobs", json={"image_id": image["image_id"], **JOB})
                resp.raise_for_status()
                job_id = resp.json()["job"]["job_id"]
                for _ in range(600):
                    job = (await http.get(f"/v1/jobs/{job_id}")).json()["job"]
                    if job["state"] not in ("PENDING", "RUNNING"):
                        break
                    await asyncio.sleep(0.2)
                return str(image["sha256"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def measure(stack: Stack, args: argparse.Namespace) -> None:
    shas = await fill(stack, stack.create_api_key(TENANT), args.images, args.seed)
    pool = await db.create_pool(stack.database_url, max_size=4)
    for _ in range(600):  # the uploads' metadata, so that its deletion is part of the pass
        indexed = await pool.fetchval(
            "SELECT count(*) FROM metadata.image_metadata WHERE tenant_id = $1", TENANT
        )
        if indexed >= len(set(shas)):
            break
        await asyncio.sleep(0.1)
    jobs, metadata = (
        stack.service_channel("jobs", "bench"),
        stack.service_channel("metadata", "bench"),
    )

    async def announce(digest: str) -> None:
        return None

    deletion = Deletion(
        GatewayRepository(pool),
        Storage(stack.s3_client(), stack.s3_bucket),
        jobs_pb2_grpc.JobsServiceStub(jobs),
        metadata_pb2_grpc.MetadataServiceStub(metadata),
        announce,
    )
    await asyncio.sleep(2)  # let the stack settle after the fill
    for what in args.passes.split(","):
        if what == "jobs":  # finished jobs past the outputs' retention, the images kept
            await pool.execute(
                "UPDATE jobs.jobs SET finished_at = finished_at - interval '3 days'"
                " WHERE tenant_id = $1",
                TENANT,
            )
            stack.gateway_admin("set-retention", "--tenant", TENANT, "--outputs", "1d")
        else:  # images past the sources' retention, with whatever jobs they still have
            await pool.execute(
                "UPDATE gateway.images SET created_at = created_at - interval '3 days'"
                " WHERE tenant_id = $1",
                TENANT,
            )
            stack.gateway_admin("set-retention", "--tenant", TENANT, "--sources", "2d")
        await one_pass(stack, deletion, what)
    await jobs.close()
    await metadata.close()
    await pool.close()


async def one_pass(stack: Stack, deletion: Deletion, what: str) -> None:
    pids = stack.pids()
    before = {name: process_tree(pid, pss=False)[2] for name, pid in pids.items()}
    cpu0, wall0 = time.process_time(), time.monotonic()
    report = await deletion.apply_retention(timeout=60)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    after = {name: process_tree(pid, pss=False)[2] for name, pid in pids.items()}
    n = max(1, report.images_deleted if what == "images" else report.jobs_deleted)
    print(
        f"\n== retention pass ({what}): {report.images_deleted} images, {report.jobs_deleted} jobs,"
        f" {report.objects_deleted} objects deleted ({report.objects_kept} kept) in {wall:.2f} s"
    )
    spent = {"gateway (this process)": cpu} | {
        name: after[name] - before[name] for name in sorted(pids)
    }
    unit = "image" if what == "images" else "job"
    print(f"CPU (s; ms per {unit} deleted):")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {s:>7.3f}  {s * 1000 / n:>7.2f}")
    total = sum(spent.values())
    print(f"  {'total':<24} {total:>7.3f}  {total * 1000 / n:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retention")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--passes",
        default="images",
        help="images: one pass deleting the images with their jobs; jobs,images: first a pass"
        " deleting the jobs (outputs' retention), then one deleting the images",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pixmesh-retention-"))
    # No retention loop of the gateway's own during the bench: the pass measured is this one.
    env = {"PIXMESH_TENANT_RETENTION_INTERVAL_S": "86400"}
    stack = Stack(tmp, Ports.free(), durable=False, service_env={"*": env})
    try:
        stack.start_infra()
        stack.start_envoy()
        stack.start_services(SERVICES)
        asyncio.run(measure(stack, args))
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
