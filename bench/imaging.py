"""Imaging benchmarks: they print figures, they do not pass or fail. Results: BENCHMARKS.md.

    .venv/bin/python -m bench.imaging                  # all three, a few minutes on 2 cores
    .venv/bin/python -m bench.imaging --only cpu       # or: mesh, rss, renditions, cheap, repeat
                                                       # (all but cpu share one stack)

(a) cpu   Per-image CPU time of the pipeline, 12 MP JPEG -> 800 px wide WebP, against a bare
          in-process Pillow loop doing the same (open, draft, Lanczos resize, WebP q80). Measured
          with time.process_time, interleaved image by image, medians. Twice: the pipeline called
          in-process, and through the isolated process pool the worker uses (the parent's CPU
          for the hop plus the child's, read inside the child).
(b) mesh  End-to-end jobs/s through a local stack started like tests/conftest.py does (free
          loopback ports): REST POST /v1/jobs, then the NDJSON watch stream until SUCCEEDED (the
          output is stored in S3), with N concurrent clients for a fixed count. Then thumbor,
          installed in its own venv (.pixmesh/bench-venv, never the project's), on a free
          loopback port with the file loader, with the same clients, count, images and resize:
          GET /unsafe/800x0/filters:format(webp)/<image>. Jobs are sent with "reuse": false: the
          same images come back every few jobs, and the figure is the cost of doing the work.
(c) rss   Peak RSS of the imaging worker's process tree (service process, forkserver and
          pipeline children, summed) sampled every 20 ms while it turns 50 MP JPEGs into 800 px
          WebPs, N jobs at a time.
(d) renditions  Eager renditions: one 12 MP source -> 4 WebPs (1600, 800, 400, 200 px wide) as one
          job, against thumbor serving the same 4 sizes as 4 requests; same sources, same clients,
          interleaved rounds. Source images per second, CPU, and output bytes per width.
(e) cheap Trivial jobs (256x256 JPEG -> 64 px PNG): what the mesh itself costs per job, by
          process, when the image work is almost nothing.
(f) repeat A repeated identical job: fresh 12 MP sources made once (-> 800 px WebP), then the same
          jobs again, one client: server CPU and latency of the second run against the first
          (the outputs are found by key and metadata; nothing is downloaded or computed).

thumbor is set up with:  python3.11 -m venv .pixmesh/bench-venv &&
                         .pixmesh/bench-venv/bin/pip install thumbor==7.8.0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import PIL
import psutil
from PIL import Image

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.isolation import IsolationConfig, ProcessPool
from services.imaging.limits import Limits
from services.imaging.pipeline import run
from services.runtime.imageprobe import configure_pillow

REPO = Path(__file__).resolve().parent.parent
THUMBOR = REPO / ".pixmesh" / "bench-venv" / "bin" / "thumbor"
WIDTH = 800
QUALITY = 80  # pixmesh's WebP default, and thumbor's QUALITY default
PHOTO_12MP = (4000, 3000)
PHOTO_50MP = (8640, 5760)  # 49.8 MP: inside the default 50 MP limit
REST_OPERATIONS = [{"resize": {"width": WIDTH}}, {"convert": {"format": "WEBP"}}]
RENDITION_WIDTHS = (1600, 800, 400, 200)
REST_RENDITIONS = [
    {"name": f"w{w}", "operations": [{"resize": {"width": w}}, {"convert": {"format": "WEBP"}}]}
    for w in RENDITION_WIDTHS
]
CHEAP_SIZE = (256, 256)
CHEAP_OPERATIONS = [{"resize": {"width": 64}}, {"convert": {"format": "PNG"}}]
OPERATIONS = [
    operations_pb2.Operation(resize=operations_pb2.Resize(width=WIDTH)),
    operations_pb2.Operation(convert=operations_pb2.Convert(format=image_pb2.WEBP)),
]


# -- images ------------------------------------------------------------------------------------


def photo(size: tuple[int, int], seed: int) -> bytes:
    """A camera-like JPEG: a natural photo scaled up, with sensor-like grain so that the
    entropy-coded data (and so decoding time) is that of a real photo, not of a smooth blow-up.
    Different seeds give different bytes, so no cache anywhere can serve a repeat."""
    base = _natural(seed)
    img = base.resize(size, Image.Resampling.BICUBIC)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(img, dtype=np.int16)
    grain = rng.normal(0, 5, pixels.shape).astype(np.int16)
    noisy = Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    noisy.save(out, "JPEG", quality=90)
    return out.getvalue()


def _natural(seed: int) -> Image.Image:
    names = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
    try:
        import skimage

        path = Path(skimage.__file__).parent / "data" / names[seed % len(names)]
        return Image.open(path).convert("RGB")
    except (ImportError, OSError):  # no photos at hand: a colourful synthetic scene
        ramp = Image.linear_gradient("L").resize((640, 480))
        return Image.merge(
            "RGB",
            (ramp, ramp.rotate(90, expand=False), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        )


# -- (a) CPU per image -------------------------------------------------------------------------


def bare_pillow(data: bytes) -> bytes:
    """What someone writes with Pillow alone for the same result, DCT scaling included."""
    with Image.open(io.BytesIO(data)) as img:
        height = round(img.height * WIDTH / img.width)
        img.draft("RGB", (WIDTH, height))
        small = img.resize((WIDTH, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "WEBP", quality=QUALITY)
    return out.getvalue()


def pipeline_in_child(data: bytes, limits: Limits) -> float:
    """Runs in a pool child: the pipeline as the worker runs it; returns the child's total CPU
    time so far, so that consecutive calls also count unpickling the input and pickling the
    result."""
    run(data, OPERATIONS, limits=limits)
    return time.process_time()


@dataclass
class CpuFigures:
    bare_ms: float
    inprocess_ms: float
    isolated_ms: float
    isolated_parent_ms: float
    samples: int
    input_bytes: int
    # WebP encoder effort (libwebp `method`) -> (median encode ms, mean bytes, mean PSNR dB)
    webp_methods: dict[int, tuple[float, float, float]] = field(default_factory=dict)


WEBP_METHODS = (6, 5, 4, 3, 2, 1, 0)  # 4 is Pillow's default, pixmesh's and thumbor's


def webp_methods(images: int, iterations: int) -> dict[int, tuple[float, float, float]]:
    """The encoder-effort trade on the bench's own resized photos: CPU of the WebP encode alone
    (q80, methods interleaved), output bytes and PSNR against the unencoded resized pixels."""
    smalls = []
    for seed in range(images):
        with Image.open(io.BytesIO(photo(PHOTO_12MP, seed=seed))) as img:
            img.draft("RGB", (WIDTH, WIDTH * 3 // 4))
            smalls.append(img.resize((WIDTH, WIDTH * 3 // 4), Image.Resampling.LANCZOS))
    times: dict[int, list[float]] = {m: [] for m in WEBP_METHODS}
    sizes: dict[int, list[int]] = {m: [] for m in WEBP_METHODS}
    psnrs: dict[int, list[float]] = {m: [] for m in WEBP_METHODS}
    for i in range(iterations):
        small = smalls[i % len(smalls)]
        for method in WEBP_METHODS:
            out = io.BytesIO()
            t = time.process_time()
            small.save(out, "WEBP", quality=QUALITY, method=method)
            times[method].append(time.process_time() - t)
            if i < len(smalls):
                sizes[method].append(out.tell())
                decoded = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
                mse = float(np.mean((decoded - np.asarray(small, dtype=np.float64)) ** 2))
                psnrs[method].append(10 * np.log10(255**2 / mse))
    return {
        m: (
            statistics.median(times[m]) * 1000,
            statistics.mean(sizes[m]),
            statistics.mean(psnrs[m]),
        )
        for m in WEBP_METHODS
    }


async def bench_cpu(iterations: int) -> CpuFigures:
    limits = Limits()
    configure_pillow(limits.max_pixels)
    data = photo(PHOTO_12MP, seed=0)
    assert Image.open(io.BytesIO(bare_pillow(data))).size == (WIDTH, 600)
    pool = ProcessPool(
        IsolationConfig(
            workers=1, memory_limit_bytes=None, max_pixels=50_000_000, max_tasks_per_child=10_000
        )
    )
    await pool.start()
    bare: list[float] = []
    inprocess: list[float] = []
    isolated: list[float] = []
    hop: list[float] = []
    try:
        child_cpu = await pool.run(pipeline_in_child, data, limits)
        for i in range(iterations + 3):
            t = time.process_time()
            bare_pillow(data)
            b = time.process_time() - t

            t = time.process_time()
            run(data, OPERATIONS, limits=limits)
            p = time.process_time() - t

            t = time.process_time()
            now = await pool.run(pipeline_in_child, data, limits)
            parent = time.process_time() - t
            child, child_cpu = now - child_cpu, now
            if i >= 3:  # warm-up: caches, lazy imports, the allocator's first growth
                bare.append(b)
                inprocess.append(p)
                isolated.append(parent + child)
                hop.append(parent)
    finally:
        pool.close()
    ms = 1000.0
    return CpuFigures(
        bare_ms=statistics.median(bare) * ms,
        inprocess_ms=statistics.median(inprocess) * ms,
        isolated_ms=statistics.median(isolated) * ms,
        isolated_parent_ms=statistics.median(hop) * ms,
        samples=iterations,
        input_bytes=len(data),
        webp_methods=webp_methods(images=8, iterations=max(iterations // 2, 8)),
    )


# -- (b) throughput, (c) RSS -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drive(
    count: int,
    clients: int,
    one: Callable[[httpx.Client, int], None],
    client: Callable[[], httpx.Client],
) -> float:
    """Run `one(http, i)` for i in range(count) from `clients` threads; returns wall seconds."""
    counter = itertools.count()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        with client() as http:
            while True:
                with lock:
                    i = next(counter)
                if i >= count or errors:
                    return
                try:
                    one(http, i)
                except BaseException as exc:  # reported after the run
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


class Mesh:
    def __init__(self, rest_url: str, api_key: str) -> None:
        self.rest_url = rest_url
        self.headers = {"authorization": f"Bearer {api_key}"}
        self.image_ids: list[str] = []
        self.output_bytes: list[int] = []  # of every job that succeeded

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.rest_url, headers=self.headers, timeout=120)

    def upload(self, images: Sequence[bytes]) -> list[str]:
        with self.client() as http:
            ids = []
            for data in images:
                resp = http.post("/v1/images", content=data, headers={"content-type": "image/jpeg"})
                resp.raise_for_status()
                ids.append(resp.json()["image"]["image_id"])
        return ids

    def job(
        self,
        http: httpx.Client,
        image_id: str,
        body: Mapping[str, object] | None = None,
    ) -> dict[str, object]:
        """One job to its end; `body`: the CreateJob body besides image_id (default: the (b)
        pipeline, recomputed)."""
        body = body or {"operations": REST_OPERATIONS, "reuse": False}
        resp = http.post("/v1/jobs", json={"image_id": image_id, **body})
        resp.raise_for_status()
        job_id = resp.json()["job"]["job_id"]
        last: dict[str, object] = {}
        with http.stream("GET", f"/v1/jobs/{job_id}:watch") as stream:
            for line in stream.iter_lines():
                if line.strip():
                    last = json.loads(line)["job"]
        if last.get("state") != "SUCCEEDED":
            raise RuntimeError(f"job {job_id} ended {last}")
        outputs = last.get("outputs")
        assert isinstance(outputs, list) and outputs, last
        self.output_bytes.append(int(outputs[0]["size_bytes"]))  # uint64: a JSON string
        return last

    def run(
        self,
        image_ids: Sequence[str],
        count: int,
        clients: int,
        body: Mapping[str, object] | None = None,
        done: Callable[[dict[str, object]], None] | None = None,
    ) -> float:
        def one(http: httpx.Client, i: int) -> None:
            last = self.job(http, image_ids[i % len(image_ids)], body)
            if done is not None:
                done(last)

        return drive(count, clients, one, self.client)


@contextmanager
def thumbor_server(root: Path, processes: int) -> Iterator[tuple[str, int]]:
    """thumbor on a free loopback port: (its URL, the pid of its main process)."""
    port = free_port()
    conf = root / "thumbor.conf"
    conf.write_text(
        "\n".join(
            [
                "LOADER = 'thumbor.loaders.file_loader'",
                f"FILE_LOADER_ROOT_PATH = {str(root)!r}",
                # No cache of originals or results: every request decodes and encodes.
                "STORAGE = 'thumbor.storages.no_storage'",
                "RESULT_STORAGE = None",
                f"QUALITY = {QUALITY}",
                "ALLOW_UNSAFE_URL = True",
                "",
            ]
        )
    )
    argv = [str(THUMBOR), "-i", "127.0.0.1", "-p", str(port), "-c", str(conf), "-l", "error"]
    argv += ["--processes", str(processes)]
    log = (root / "thumbor.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"thumbor did not start: {(root / 'thumbor.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


def thumbor_run(
    url: str,
    names: Sequence[str],
    count: int,
    clients: int,
    output_bytes: list[int],
    widths: Sequence[int] = (WIDTH,),
    by_width: dict[int, list[int]] | None = None,
) -> float:
    """`count` sources, each served at every width in `widths` (one request each)."""

    def one(http: httpx.Client, i: int) -> None:
        for width in widths:
            resp = http.get(f"/unsafe/{width}x0/filters:format(webp)/{names[i % len(names)]}")
            resp.raise_for_status()
            if resp.headers.get("content-type") != "image/webp":
                raise RuntimeError(f"thumbor answered {resp.headers.get('content-type')}")
            output_bytes.append(len(resp.content))
            if by_width is not None:
                by_width.setdefault(width, []).append(len(resp.content))

    return drive(count, clients, one, lambda: httpx.Client(base_url=url, timeout=120))


def tree_cpu(pids: Sequence[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants, those that have
    exited included (their parents' children_user/children_system: a recycled pipeline child
    must not take its CPU with it)."""
    return sum(sum(cpu_split(pid)) for pid in pids)


def cpu_split(pid: int) -> tuple[float, float]:
    """(CPU seconds of the process itself, of all its descendants, exited ones included)."""
    own = rest = 0.0
    with suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        times = root.cpu_times()
        own = times.user + times.system
        rest = times.children_user + times.children_system
        for proc in root.children(recursive=True):
            with suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                rest += times.user + times.system + times.children_user + times.children_system
    return own, rest


def settle(pids: Mapping[str, int], idle_cpu_s: float = 0.05, timeout_s: float = 60.0) -> None:
    """Wait until the stack is idle (under `idle_cpu_s` of CPU in half a second): an upload
    sets the metadata service indexing, which a round must not count as its jobs' cost."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = tree_cpu(list(pids.values()))
        time.sleep(0.5)
        if tree_cpu(list(pids.values())) - before < idle_cpu_s:
            return


@dataclass
class Side:
    """One system's share of the interleaved rounds."""

    jobs: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0
    # CPU seconds per server process (with its descendants), by name.
    server_cpu: dict[str, float] = field(default_factory=dict)

    def measure(self, run: Callable[[], float], jobs: int, servers: Mapping[str, int]) -> None:
        """The imaging service's pipeline children (the image work) are counted apart from its
        own process, as "imaging-children"."""
        before = {name: cpu_split(pid) for name, pid in servers.items()}
        mine = time.process_time()
        self.seconds += run()
        self.client_cpu += time.process_time() - mine
        for name, pid in servers.items():
            own, rest = cpu_split(pid)
            used = {name: own - before[name][0] + rest - before[name][1]}
            if name == "imaging":
                used = {name: own - before[name][0], "imaging-children": rest - before[name][1]}
            for key, cpu in used.items():
                self.server_cpu[key] = self.server_cpu.get(key, 0.0) + cpu
        self.jobs += jobs

    @property
    def image_ms(self) -> float:
        """CPU per job of the imaging pipeline children: the image work."""
        return self.server_cpu.get("imaging-children", 0.0) / self.jobs * 1000

    @property
    def mesh_ms(self) -> float:
        """Server CPU per job beyond the image work: what the mesh itself costs."""
        return self.server_ms - self.image_ms

    @property
    def per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def cpu_ms(self) -> float:
        return (sum(self.server_cpu.values()) + self.client_cpu) / self.jobs * 1000

    @property
    def server_ms(self) -> float:
        return sum(self.server_cpu.values()) / self.jobs * 1000

    def breakdown(self) -> str:
        """CPU ms per job of the busiest processes."""
        costs = sorted(self.server_cpu.items(), key=lambda kv: -kv[1])
        parts = [f"{name} {cpu / self.jobs * 1000:.0f}" for name, cpu in costs if cpu > 0]
        parts.append(f"client {self.client_cpu / self.jobs * 1000:.0f}")
        return ", ".join(parts)

    def breakdown_fine(self) -> str:
        """CPU ms per job of every process that used any, to a tenth of a millisecond."""
        costs = sorted(self.server_cpu.items(), key=lambda kv: -kv[1])
        return ", ".join(
            f"{name} {cpu / self.jobs * 1000:.1f}"
            for name, cpu in costs
            if cpu >= 0.00005 * self.jobs
        )


class MemorySampler:
    """Peak memory of a process and all its descendants, sampled in a thread. RSS summed over
    processes counts the pages they share (forked children, libraries) once per process; PSS
    splits them, so its sum is the tree's real footprint."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_root = 0
        self.peak_child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> tuple[int, int, int, int]:
        """(sum of RSS, sum of PSS, RSS of the root, largest RSS of a descendant)."""
        rss: list[int] = []
        pss = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):
                info = proc.memory_full_info()
                rss.append(info.rss)
                pss += info.pss
        return sum(rss), pss, rss[0], max(rss[1:], default=0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss, pss, root, child = self.sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_root = max(self.peak_root, root)
            self.peak_child = max(self.peak_child, child)
            time.sleep(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class MeshFigures:
    mesh: Side
    thumbor: Side | None
    thumbor_note: str
    rounds: int
    clients: int
    images: int
    # Size of each output (the same 800 px WebPs at quality 80 from both, if the work is equal).
    mesh_bytes: list[int] = field(default_factory=list)
    thumbor_bytes: list[int] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class RenditionFigures:
    mesh: Side
    thumbor: Side | None
    sources: int
    # Output bytes by width, every source.
    mesh_bytes: dict[int, list[int]] = field(default_factory=dict)
    thumbor_bytes: dict[int, list[int]] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class CheapFigures:
    mesh: Side
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # CreateJob alone, open loop: latency of every request (seconds), at `rate` per second.
    create_latencies: list[float] = field(default_factory=list)
    rate: float = 0.0
    late: int = 0  # requests the driver could not start on time (the driver was the limit)
    # CreateJob alone: CPU of every process per request, its worker stopped (see create_only).
    create: Side | None = None


def open_loop(mesh: Mesh, image_ids: Sequence[str], rate: float, seconds: float) -> CheapFigures:
    """CreateJob (REST, through Envoy) at `rate` per second for `seconds`, on a schedule that
    does not wait for answers (open loop): each latency counts from the request's slot, so a
    slow answer cannot hide the requests queued behind it. The jobs run meanwhile."""
    count = int(rate * seconds)
    body = {"operations": CHEAP_OPERATIONS, "reuse": False}
    latencies: list[float] = []
    late = 0
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def one(http: httpx.Client, i: int) -> None:
        nonlocal late
        slot = start + i / rate
        wait = slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.005:
            with lock:
                late += 1
        resp = http.post("/v1/jobs", json={"image_id": image_ids[i % len(image_ids)], **body})
        resp.raise_for_status()
        with lock:
            latencies.append(time.perf_counter() - slot)

    # Enough threads that the driver never waits for an answer to send the next request.
    drive(count, 32, one, mesh.client)
    return CheapFigures(Side(), create_latencies=latencies, rate=rate, late=late)


@dataclass
class RepeatFigures:
    first: Side
    repeat: Side
    reused: int  # outputs of the second run reported reused
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class RssFigures:
    idle_rss_mb: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_service_mb: float
    peak_child_mb: float
    jobs: int
    input_mb: float


@dataclass
class StackFigures:
    mesh: MeshFigures | None = None
    rss: RssFigures | None = None
    renditions: RenditionFigures | None = None
    cheap: CheapFigures | None = None
    repeat: RepeatFigures | None = None


# CreateJob alone: a one-stage job for the inference service, which is stopped meanwhile, so
# that what the processes spend is the request's own work (Envoy, the gateway, imaging's plan,
# the jobs service and Postgres, the outbox's publish to NATS), not the task's.
CREATE_ONLY_OPERATIONS = [{"denoise": {"sigma": 25}}]


def create_only(
    mesh: Mesh, stack_pids: Mapping[str, int], image_ids: Sequence[str], count: int, clients: int
) -> Side:
    """CPU per CreateJob by process: `count` REST CreateJobs from `clients` threads, with the
    inference service SIGSTOPped so that no task runs; the jobs are cancelled afterwards and the
    service resumed (their tasks then end at once as cancelled)."""
    pids = dict(stack_pids)
    inference = pids.pop("inference")
    body = {"operations": CREATE_ONLY_OPERATIONS, "reuse": False}
    created: list[str] = []
    lock = threading.Lock()

    def one(http: httpx.Client, i: int) -> None:
        resp = http.post("/v1/jobs", json={"image_id": image_ids[i % len(image_ids)], **body})
        resp.raise_for_status()
        with lock:
            created.append(resp.json()["job"]["job_id"])

    side = Side()
    os.kill(inference, signal.SIGSTOP)
    try:
        drive(clients * 5, clients, one, mesh.client)  # warm-up
        settle(pids)
        side.measure(lambda: drive(count, clients, one, mesh.client), count, pids)
    finally:
        with mesh.client() as http:
            for job_id in created:
                http.post(f"/v1/jobs/{job_id}:cancel")
        os.kill(inference, signal.SIGCONT)
    return side


def bench_stack(args: argparse.Namespace, work: Path) -> StackFigures:
    """(b)..(f): one local stack (and thumbor where a round compares with it)."""
    from deploy.local import Ports, Stack

    figures = StackFigures()
    images = [photo(PHOTO_12MP, seed=i) for i in range(args.images)]
    names = []
    for i, data in enumerate(images):
        names.append(f"img{i}.jpg")
        (work / names[-1]).write_bytes(data)
    with contextlib.ExitStack() as cleanup:
        stack = Stack(work / "stack", Ports.free(), durable=False)
        cleanup.callback(stack.stop)
        stack.start()
        mesh = Mesh(stack.rest_url, stack.create_api_key("bench"))
        stack_pids = stack.pids()
        thumbor_url, thumbor_pid, thumbor_note = None, 0, ""
        if {"mesh", "renditions"} & set(args.only):
            if THUMBOR.exists():
                server = thumbor_server(work, args.thumbor_processes)
                thumbor_url, thumbor_pid = cleanup.enter_context(server)
            else:
                thumbor_note = f"not run: {THUMBOR} is missing (see the module doc)"
        ids = mesh.upload(images) if {"mesh", "renditions"} & set(args.only) else []
        settle(stack_pids)
        if "mesh" in args.only:
            mesh_figures = MeshFigures(
                Side(), None, thumbor_note, args.rounds, args.clients, len(images)
            )
            figures.mesh = mesh_figures
            if thumbor_url:
                mesh_figures.thumbor = Side()
            # Warm-up: every process, every code path, both systems.
            mesh.run(ids, args.clients, args.clients)
            if thumbor_url:
                thumbor_run(thumbor_url, names, args.clients, args.clients, [])
            mesh.output_bytes.clear()
            mesh_figures.load_before = os.getloadavg()
            # Interleaved rounds: both systems see the same drift in whatever else the machine
            # is doing. Between rounds the idle system uses next to no CPU.
            per_round = max(1, args.count // args.rounds)
            for _ in range(args.rounds):
                mesh_figures.mesh.measure(
                    lambda: mesh.run(ids, per_round, args.clients), per_round, stack_pids
                )
                if thumbor_url and mesh_figures.thumbor:
                    run_thumbor = functools.partial(
                        thumbor_run,
                        thumbor_url,
                        names,
                        per_round,
                        args.clients,
                        mesh_figures.thumbor_bytes,
                    )
                    mesh_figures.thumbor.measure(run_thumbor, per_round, {"thumbor": thumbor_pid})
            mesh_figures.load_after = os.getloadavg()
            mesh_figures.mesh_bytes = list(mesh.output_bytes)
        if "renditions" in args.only:
            figures.renditions = bench_renditions(
                args, mesh, ids, names, stack_pids, thumbor_url, thumbor_pid
            )
        if "cheap" in args.only:
            small = [photo(CHEAP_SIZE, seed=300 + i) for i in range(8)]
            cheap_ids = mesh.upload(small)
            settle(stack_pids)
            body = {"operations": CHEAP_OPERATIONS, "reuse": False}
            mesh.run(cheap_ids, args.clients * 4, args.clients, body)  # warm-up
            settle(stack_pids)
            side = Side()
            side.measure(
                lambda: mesh.run(cheap_ids, args.cheap_count, args.clients, body),
                args.cheap_count,
                stack_pids,
            )
            figures.cheap = CheapFigures(side, os.getloadavg())
            if args.open_loop_rate:
                settle(stack_pids)
                timed = open_loop(mesh, cheap_ids, args.open_loop_rate, args.open_loop_seconds)
                figures.cheap.create_latencies = timed.create_latencies
                figures.cheap.rate, figures.cheap.late = timed.rate, timed.late
                settle(stack_pids, timeout_s=300)  # the jobs drain before the next round
            if args.create_count:
                figures.cheap.create = create_only(
                    mesh, stack_pids, cheap_ids, args.create_count, args.clients
                )
                settle(stack_pids, timeout_s=300)
        if "repeat" in args.only:
            fresh = [photo(PHOTO_12MP, seed=500 + i) for i in range(args.repeat_images)]
            fresh_ids = mesh.upload(fresh)
            settle(stack_pids)
            body = {"operations": REST_OPERATIONS}  # reuse: the default
            reused: list[bool] = []

            def seen(job: dict[str, object]) -> None:
                outputs = job.get("outputs")
                assert isinstance(outputs, list)
                reused.append(bool(outputs[0].get("provenance", {}).get("reused")))

            first, again = Side(), Side()
            n = len(fresh_ids)
            first.measure(lambda: mesh.run(fresh_ids, n, 1, body), n, stack_pids)
            settle(stack_pids)
            reused.clear()
            again.measure(lambda: mesh.run(fresh_ids, n, 1, body, seen), n, stack_pids)
            figures.repeat = RepeatFigures(first, again, sum(reused), os.getloadavg())
        if "rss" in args.only:
            big = [photo(PHOTO_50MP, seed=100 + i) for i in range(args.rss_images)]
            big_ids = mesh.upload(big)
            sampler = MemorySampler(stack.pids()["imaging"])
            idle = sampler.sample()[0]
            with sampler:
                mesh.run(big_ids, args.rss_jobs, args.clients)
            mb = 1024 * 1024
            figures.rss = RssFigures(
                idle / mb,
                sampler.peak_rss / mb,
                sampler.peak_pss / mb,
                sampler.peak_root / mb,
                sampler.peak_child / mb,
                args.rss_jobs,
                statistics.mean(len(b) for b in big) / mb,
            )
    return figures


def bench_renditions(
    args: argparse.Namespace,
    mesh: Mesh,
    ids: Sequence[str],
    names: Sequence[str],
    stack_pids: Mapping[str, int],
    thumbor_url: str | None,
    thumbor_pid: int,
) -> RenditionFigures:
    """(d): one job of 4 renditions per source against thumbor's 4 requests per source."""
    body = {"renditions": REST_RENDITIONS, "reuse": False}
    figures = RenditionFigures(Side(), Side() if thumbor_url else None, args.rendition_count)
    by_width: dict[int, list[int]] = {}

    def record(job: dict[str, object]) -> None:
        outputs = job.get("outputs")
        assert isinstance(outputs, list) and len(outputs) == len(RENDITION_WIDTHS), job
        for out in outputs:
            by_width.setdefault(int(out["width"]), []).append(int(out["size_bytes"]))

    mesh.run(ids, args.clients, args.clients, body)  # warm-up
    if thumbor_url:
        thumbor_run(thumbor_url, names, args.clients, args.clients, [], RENDITION_WIDTHS)
    figures.load_before = os.getloadavg()
    per_round = max(1, args.rendition_count // args.rounds)
    for _ in range(args.rounds):
        figures.mesh.measure(
            lambda: mesh.run(ids, per_round, args.clients, body, record), per_round, stack_pids
        )
        if thumbor_url and figures.thumbor:
            run_thumbor = functools.partial(
                thumbor_run,
                thumbor_url,
                names,
                per_round,
                args.clients,
                [],
                RENDITION_WIDTHS,
                figures.thumbor_bytes,
            )
            figures.thumbor.measure(run_thumbor, per_round, {"thumbor": thumbor_pid})
    figures.load_after = os.getloadavg()
    figures.mesh_bytes = by_width
    return figures


# -- report ------------------------------------------------------------------------------------


def thumbor_version() -> str:
    python = THUMBOR.parent / "python"
    code = "import importlib.metadata as m; print(m.version('thumbor'))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() or "?"


def report(cpu: CpuFigures | None, stack: StackFigures, args: argparse.Namespace) -> str:
    mesh, rss = stack.mesh, stack.rss
    lines = [
        f"pixmesh imaging bench: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Pillow {PIL.__version__}",
    ]
    if cpu:
        lines += [
            "",
            f"(a) CPU per image: 12 MP JPEG ({PHOTO_12MP[0]}x{PHOTO_12MP[1]}, "
            f"{cpu.input_bytes / 1e6:.1f} MB) -> {WIDTH} px wide WebP q{QUALITY}; median of "
            f"{cpu.samples}, interleaved",
            f"    bare Pillow loop (draft + Lanczos + WebP)   {cpu.bare_ms:7.1f} ms",
            f"    pipeline, in-process                        {cpu.inprocess_ms:7.1f} ms   "
            f"{cpu.inprocess_ms / cpu.bare_ms:.2f}x   (target <= 1.15x)",
            f"    pipeline, isolated child (as deployed)      {cpu.isolated_ms:7.1f} ms   "
            f"{cpu.isolated_ms / cpu.bare_ms:.2f}x   (of which the parent's hop "
            f"{cpu.isolated_parent_ms:.1f} ms)",
            f"    WebP encoder effort, the encode alone ({WIDTH}x{WIDTH * 3 // 4}, q{QUALITY}, "
            "8 photos; PSNR against the unencoded resized pixels):",
        ]
        _, base_bytes, base_psnr = cpu.webp_methods.get(4, (0.0, 0.0, 0.0))
        for method, (ms_, size, psnr) in cpu.webp_methods.items():
            lines.append(
                f"      method {method}{' (default)' if method == 4 else '          '}   "
                f"{ms_:6.1f} ms   {size / 1000:5.1f} kB ({size / base_bytes - 1:+5.1%})   "
                f"PSNR {psnr:5.2f} dB ({psnr - base_psnr:+.2f})"
            )
    if mesh:
        m = mesh.mesh
        load = ", ".join(f"{x:.1f}" for x in (*mesh.load_before, *mesh.load_after))
        lines += [
            "",
            f"(b) Throughput: {m.jobs} jobs per system in {mesh.rounds} interleaved rounds, "
            f"{mesh.clients} concurrent clients, {mesh.images} distinct 12 MP JPEGs -> {WIDTH} "
            "px wide WebP",
            f"    load average (1, 5, 15 min) before the rounds, then after: {load}",
            "                                                jobs/s   CPU/job: servers + client"
            " = total   output",
            f"    pixmesh, REST in -> output stored in S3     {m.per_s:6.2f}   {m.server_ms:6.1f}"
            f" + {m.client_cpu / m.jobs * 1000:4.1f} = {m.cpu_ms:6.1f} ms   "
            f"{_mean_kb(mesh.mesh_bytes)}",
            f"      CPU ms per job: {m.breakdown()}",
            f"      mesh beyond the image work: {m.mesh_ms:.1f} ms per job = "
            f"{m.mesh_ms / m.image_ms:.0%} of the image work ({m.image_ms:.1f} ms)  "
            "(target <= 25%)",
        ]
        t = mesh.thumbor
        if t:
            lines += [
                f"    thumbor {thumbor_version():6} ({args.thumbor_processes} processes, file "
                f"loader) {t.per_s:6.2f}   {t.server_ms:6.1f} + {t.client_cpu / t.jobs * 1000:4.1f}"
                f" = {t.cpu_ms:6.1f} ms   {_mean_kb(mesh.thumbor_bytes)}",
                f"      CPU ms per job: {t.breakdown()}",
                f"    pixmesh / thumbor                           {m.per_s / t.per_s:6.2f}x  "
                f"{t.server_ms / m.server_ms:6.2f}x (servers)  {t.cpu_ms / m.cpu_ms:4.2f}x (total)"
                "   (target >= 0.9x jobs/s, issue 10)",
            ]
        else:
            lines.append(f"    thumbor: {mesh.thumbor_note}")
    if rss:
        lines += [
            "",
            f"(c) Imaging worker memory: {rss.jobs} jobs of 50 MP JPEG ({PHOTO_50MP[0]}x"
            f"{PHOTO_50MP[1]}, {rss.input_mb:.1f} MiB) -> {WIDTH} px WebP, {args.clients} "
            "clients",
            "    service process + forkserver + pipeline children, sampled every 20 ms:",
            f"    peak, sum of PSS (the tree's footprint)      {rss.peak_pss_mb:7.1f} MiB   "
            "(target < 400)",
            f"    peak, sum of RSS (shared pages counted per process) {rss.peak_rss_mb:7.1f} MiB",
            f"    peak RSS of the service process             {rss.peak_service_mb:7.1f} MiB",
            f"    peak RSS of one pipeline child              {rss.peak_child_mb:7.1f} MiB",
            f"    sum of RSS when idle, before the jobs       {rss.idle_rss_mb:7.1f} MiB",
        ]
    lines += _report_more(stack, args)
    return "\n".join(lines)


def _load(*loads: tuple[float, float, float]) -> str:
    return ", ".join(f"{x:.1f}" for load in loads for x in load)


def _report_more(stack: StackFigures, args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    r = stack.renditions
    if r:
        m = r.mesh
        lines += [
            "",
            f"(d) Eager renditions: {m.jobs} sources per system in {args.rounds} interleaved "
            f"rounds, {args.clients} clients; 12 MP JPEG -> WebP "
            f"{', '.join(map(str, RENDITION_WIDTHS))} px wide (pixmesh: one job; thumbor: 4 "
            "requests)",
            f"    load average before, then after: {_load(r.load_before, r.load_after)}",
            f"    pixmesh   {m.per_s:6.2f} sources/s   CPU/source {m.server_ms:6.1f} + "
            f"{m.client_cpu / m.jobs * 1000:4.1f} ms   ({m.breakdown()})",
        ]
        if r.thumbor:
            t = r.thumbor
            lines += [
                f"    thumbor   {t.per_s:6.2f} sources/s   CPU/source {t.server_ms:6.1f} + "
                f"{t.client_cpu / t.jobs * 1000:4.1f} ms",
                f"    pixmesh / thumbor: {m.per_s / t.per_s:.2f}x sources/s   (target >= 1.1x)",
            ]
        for width in RENDITION_WIDTHS:
            mine = r.mesh_bytes.get(width, [])
            theirs = r.thumbor_bytes.get(width, [])
            ratio = (
                f"{statistics.mean(mine) / statistics.mean(theirs) - 1:+.1%} vs thumbor"
                if mine and theirs
                else ""
            )
            lines.append(
                f"    {width:5} px: pixmesh {_mean_kb(mine)}, thumbor {_mean_kb(theirs)}  {ratio}"
            )
    c = stack.cheap
    if c:
        m = c.mesh
        lines += [
            "",
            f"(e) Cheap jobs: {m.jobs} jobs, {args.clients} clients, {CHEAP_SIZE[0]}x"
            f"{CHEAP_SIZE[1]} JPEG -> 64 px PNG; load average after: {_load(c.load)}",
            f"    {m.per_s:6.1f} jobs/s; server CPU per job {m.server_ms:5.1f} ms, of which the "
            f"mesh {m.mesh_ms:5.1f} ms (target <= 20) and the image work {m.image_ms:4.1f} ms;"
            f" client {m.client_cpu / m.jobs * 1000:4.1f} ms",
            f"      CPU ms per job: {m.breakdown()}",
        ]
        if c.create_latencies:
            q = statistics.quantiles(c.create_latencies, n=100)
            lines.append(
                f"    CreateJob alone, open loop at {c.rate:.0f}/s for "
                f"{len(c.create_latencies)} requests (the jobs running meanwhile): latency p50 "
                f"{q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms (target <= 50), max "
                f"{max(c.create_latencies) * 1000:.1f} ms; requests started late: {c.late}"
            )
        if c.create:
            k = c.create
            lines += [
                f"    CreateJob alone ({k.jobs} requests, {args.clients} clients, a one-stage job"
                f" whose worker is stopped): CPU per request {k.server_ms:4.1f} ms (target <= 4),"
                f" client {k.client_cpu / k.jobs * 1000:3.1f} ms",
                f"      CPU ms per request: {k.breakdown_fine()}",
            ]
    rep = stack.repeat
    if rep:
        f, a = rep.first, rep.repeat
        lines += [
            "",
            f"(f) Repeated identical job: {f.jobs} fresh 12 MP JPEGs -> {WIDTH} px WebP, one "
            f"client, then the same jobs again; load average after: {_load(rep.load)}",
            f"    first run   server CPU/job {f.server_ms:6.1f} ms   latency {f.seconds / f.jobs * 1000:6.1f} ms"
            f"   ({f.breakdown()})",
            f"    repeat      server CPU/job {a.server_ms:6.1f} ms   latency {a.seconds / a.jobs * 1000:6.1f} ms"
            f"   ({a.breakdown()})",
            f"    repeat / first: {a.server_ms / f.server_ms:.1%} of the CPU (target <= 10%), "
            f"{a.seconds / f.seconds:.1%} of the latency; outputs reported reused: {rep.reused}"
            f"/{a.jobs}",
        ]
    return lines


def _mean_kb(sizes: Sequence[int]) -> str:
    return f"{statistics.mean(sizes) / 1000:.1f} kB mean" if sizes else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("cpu", "mesh", "rss", "renditions", "cheap", "repeat"),
        default=["cpu", "mesh", "rss", "renditions", "cheap", "repeat"],
    )
    parser.add_argument("--iterations", type=int, default=40, help="(a) images per variant")
    parser.add_argument("--count", type=int, default=60, help="(b) jobs per system")
    parser.add_argument("--rounds", type=int, default=4, help="(b) interleaved rounds")
    parser.add_argument("--clients", type=int, default=4, help="(b, c) concurrent clients")
    parser.add_argument("--images", type=int, default=8, help="(b) distinct 12 MP images")
    parser.add_argument("--thumbor-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rss-images", type=int, default=4, help="(c) distinct 50 MP images")
    parser.add_argument("--rss-jobs", type=int, default=12, help="(c) jobs")
    parser.add_argument("--rendition-count", type=int, default=24, help="(d) sources")
    parser.add_argument("--cheap-count", type=int, default=200, help="(e) jobs")
    parser.add_argument("--open-loop-rate", type=float, default=50, help="(e) CreateJob/s")
    parser.add_argument(
        "--create-count", type=int, default=200, help="(e) CreateJobs alone (0: skip)"
    )
    parser.add_argument("--open-loop-seconds", type=float, default=10, help="(e) seconds")
    parser.add_argument("--repeat-images", type=int, default=8, help="(f) distinct sources")
    args = parser.parse_args(argv)

    cpu = asyncio.run(bench_cpu(args.iterations)) if "cpu" in args.only else None
    stack = StackFigures()
    if set(args.only) - {"cpu"}:
        work = Path(tempfile.mkdtemp(prefix="pixmesh-bench-"))
        try:
            stack = bench_stack(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(report(cpu, stack, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
