"""Video benchmarks: they print figures, they do not pass or fail. Results: BENCHMARKS.md.

    flock /tmp/pixmesh-bench.lock .venv/bin/python -m bench.video            # ~10 min + clips
    .venv/bin/python -m bench.video --clips 30s,2min --rounds 5                # a subset

Needs the bench extra (`pip install -c constraints.txt -e .[bench]`): the ffmpeg command line
comes from the imageio-ffmpeg wheel; pixmesh itself never runs it.

Clips (made once, cached in .pixmesh/bench-video/ because the 10-minute one takes minutes):
FFmpeg's `testsrc2` pattern (moving, with text and gradients), H.264 by libx264 `veryfast`, CRF 23,
its default GOP (keyframes up to 250 frames apart), yuv420p, 30 fps: 1080p for 30 s, 2 min and
10 min, and 2160p (4K) for 30 s.

(a) poster  Three poster frames at 10/50/95 % of the duration, EXACT, full size, JPEG:
            - ffmpeg: three `ffmpeg -ss T -i clip -frames:v 1 -q:v 2 out.jpg` processes (input
              seeking: to the keyframe before T, then decode to T), one after the other, from a
              local file; wall time and the children's CPU time;
            - pixmesh: the clip uploaded once (presigned PUT + register, not timed), then a REST
              job `video_frames {} + convert JPEG` (reuse: false) until SUCCEEDED through the
              NDJSON watch stream, the three JPEGs stored in S3; wall time, and the CPU time of
              every pixmesh service process tree (children included) during the job.
            Interleaved clip by clip, round by round (ffmpeg, pixmesh, ffmpeg, ...); medians.
(b) rss     Peak memory of the imaging worker's whole process tree (service process +
            forkserver + resource tracker + pipeline children) sampled every 20 ms during the
            poster jobs of the 10-minute 1080p clip and of the 4K clip: RSS summed (pages the
            processes share counted once per process), PSS summed (shared pages split: the
            tree's real footprint), the largest single child, and the PSS of each part at the
            moment the tree's PSS peaked; also the tree between jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.imaging import Mesh, settle, tree_cpu
from deploy.local import Ports, Stack
from services.runtime.video import VideoLimits, probe_video

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".pixmesh" / "bench-video"
FRACTIONS = (0.10, 0.50, 0.95)
POSTER_BODY = {
    "operations": [{"video_frames": {}}, {"convert": {"format": "JPEG"}}],
    "reuse": False,
}


@dataclass(frozen=True)
class Clip:
    name: str
    size: str
    seconds: int

    @property
    def path(self) -> Path:
        return CACHE / f"h264-{self.name}.mp4"


CLIPS = {
    "30s": Clip("1080p-30s", "1920x1080", 30),
    "2min": Clip("1080p-2min", "1920x1080", 120),
    "10min": Clip("1080p-10min", "1920x1080", 600),
    "4k": Clip("2160p-30s", "3840x2160", 30),
}
RSS_CLIPS = ("10min", "4k")


def role(proc: psutil.Process, root: psutil.Process) -> str:
    """What a process of the imaging worker's tree is: service, forkserver, tracker, child."""
    if proc.pid == root.pid:
        return "service"
    try:
        cmdline = " ".join(proc.cmdline())
        parent = proc.ppid()
    except psutil.Error:
        return "child"
    if "forkserver" in cmdline and parent == root.pid:
        return "forkserver"
    if "resource_tracker" in cmdline:
        return "tracker"
    return "child"


class TreeSampler:
    """Peak memory of a process tree, sampled in a thread (`interval` s): RSS and PSS summed
    over the processes, the largest child's RSS, and each role's PSS when the PSS sum peaked."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = self.peak_pss = self.peak_child = 0
        self.parts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> tuple[int, int, int, dict[str, int]]:
        """(RSS summed, PSS summed, largest child RSS, PSS by role)."""
        rss = pss = child = 0
        parts: dict[str, int] = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                info = proc.memory_full_info()
                name = role(proc, self.root)
                rss += info.rss
                pss += info.pss
                parts[name] = parts.get(name, 0) + info.pss
                if name == "child":
                    child = max(child, info.rss)
        return rss, pss, child, parts

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss, pss, child, parts = self.sample()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_child = max(self.peak_child, child)
            if pss > self.peak_pss:
                self.peak_pss, self.parts = pss, parts
            time.sleep(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_clip(clip: Clip) -> None:
    if clip.path.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = clip.path.with_suffix(".tmp.mp4")
    print(f"making {clip.path.name} (once) ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            ffmpeg(), "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={clip.size}:rate=30",
            "-t", str(clip.seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            str(tmp),
        ],
        check=True,
    )  # fmt: skip
    tmp.rename(clip.path)


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def ffmpeg_posters(clip: Clip, positions: Sequence[float], out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of three ffmpeg processes extracting one JPEG each."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    for i, t in enumerate(positions):
        subprocess.run(
            [
                ffmpeg(), "-loglevel", "error", "-y", "-ss", f"{t:.6f}", "-i", str(clip.path),
                "-frames:v", "1", "-q:v", "2", str(out / f"ffmpeg-{i}.jpg"),
            ],
            check=True,
        )  # fmt: skip
    return time.perf_counter() - t0, children_cpu() - cpu0


def upload(mesh: Mesh, path: Path) -> str:
    """Presigned upload of a file (streamed from disk), then RegisterUpload; the image id."""
    size = path.stat().st_size
    with mesh.client() as http:
        resp = http.post("/v1/images:uploadUrl", json={"filename": path.name, "size_bytes": size})
        resp.raise_for_status()
        grant = resp.json()
        with path.open("rb") as f:
            put = httpx.put(grant["url"], content=f, headers=grant.get("headers"), timeout=600)
        put.raise_for_status()
        resp = http.post("/v1/images:register", json={"upload_id": grant["upload_id"]})
        resp.raise_for_status()
        image: Mapping[str, object] = resp.json()["image"]
        return str(image["image_id"])


@dataclass
class Figures:
    ffmpeg_wall: list[float] = field(default_factory=list)
    ffmpeg_cpu: list[float] = field(default_factory=list)
    mesh_wall: list[float] = field(default_factory=list)
    mesh_cpu: list[float] = field(default_factory=list)
    imaging_cpu: list[float] = field(default_factory=list)
    # The storage server's share (SeaweedFS serving the child's range reads, the outputs' PUTs).
    storage_cpu: list[float] = field(default_factory=list)
    peak_rss: int = 0
    peak_pss: int = 0
    peak_child: int = 0
    # PSS by role (service, forkserver, tracker, child) when the tree's PSS peaked.
    parts: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0

    def line(self, name: str) -> str:
        fw, mw = statistics.median(self.ffmpeg_wall), statistics.median(self.mesh_wall)
        fc, mc = statistics.median(self.ffmpeg_cpu), statistics.median(self.mesh_cpu)
        ic = statistics.median(self.imaging_cpu)
        sc = statistics.median(self.storage_cpu)
        return (
            f"| {name} | {self.size_bytes / 1e6:.0f} MB | {fw:.2f} s | {mw:.2f} s | "
            f"**{mw / fw:.2f}x** | {fc:.2f} s | {mc:.2f} s ({ic:.2f} imaging, {sc:.2f} storage) "
            f"| {mc / fc:.2f}x |"
        )


# The imaging worker's tree between jobs: (RSS summed, PSS summed, largest child, PSS by role).
idle: dict[str, tuple[int, int, int, dict[str, int]]] = {}


def bench(args: argparse.Namespace) -> dict[str, Figures]:
    clips = [CLIPS[name] for name in args.clips.split(",")]
    for clip in clips:
        make_clip(clip)
    figures = {clip.name: Figures(size_bytes=clip.path.stat().st_size) for clip in clips}
    work = Path(tempfile.mkdtemp(prefix="pixmesh-bench-video-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, True)
        stack = Stack(work / "stack", Ports.free(), durable=False)
        cleanup.callback(stack.stop)
        stack.start()
        mesh = Mesh(stack.rest_url, stack.create_api_key("bench"))
        pids = stack.pids()
        idle["started"] = TreeSampler(pids["imaging"]).sample()
        ids = {clip.name: upload(mesh, clip.path) for clip in clips}
        positions = {
            clip.name: [
                f * probe_video(str(clip.path), VideoLimits()).duration_s for f in FRACTIONS
            ]
            for clip in clips
        }
        with mesh.client() as http:
            for clip in clips:  # warm-up: first job of each clip (connections, forkserver)
                mesh.job(http, ids[clip.name], POSTER_BODY)
            settle(pids)
            idle["after warm-up"] = TreeSampler(pids["imaging"]).sample()
            for r in range(args.rounds):
                for clip in clips:
                    fig = figures[clip.name]
                    wall, cpu = ffmpeg_posters(clip, positions[clip.name], work)
                    fig.ffmpeg_wall.append(wall)
                    fig.ffmpeg_cpu.append(cpu)
                    before = {name: tree_cpu([pid]) for name, pid in pids.items()}
                    sampler = (
                        TreeSampler(pids["imaging"])
                        if any(CLIPS[n] is clip for n in RSS_CLIPS)
                        else contextlib.nullcontext()
                    )
                    with sampler:
                        t0 = time.perf_counter()
                        job = mesh.job(http, ids[clip.name], POSTER_BODY)
                        fig.mesh_wall.append(time.perf_counter() - t0)
                    after = {name: tree_cpu([pid]) for name, pid in pids.items()}
                    fig.mesh_cpu.append(sum(after[n] - before[n] for n in pids))
                    fig.imaging_cpu.append(after["imaging"] - before["imaging"])
                    fig.storage_cpu.append(after["seaweedfs"] - before["seaweedfs"])
                    outputs = job.get("outputs")
                    assert isinstance(outputs, list) and len(outputs) == 3, job
                    if isinstance(sampler, TreeSampler):
                        fig.peak_rss = max(fig.peak_rss, sampler.peak_rss)
                        fig.peak_child = max(fig.peak_child, sampler.peak_child)
                        if sampler.peak_pss > fig.peak_pss:
                            fig.peak_pss, fig.parts = sampler.peak_pss, sampler.parts
                    print(
                        f"round {r + 1} {clip.name}: ffmpeg {wall:.2f} s, "
                        f"pixmesh {fig.mesh_wall[-1]:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    return figures


def report(figures: Mapping[str, Figures], args: argparse.Namespace, loads: Sequence[str]) -> str:
    lines = [
        f"bench/video.py --clips {args.clips} --rounds {args.rounds} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average before/after: {loads[0]} / {loads[1]})",
        "",
        "| clip | size | ffmpeg 3 seeks (wall) | pixmesh job (wall) | ratio | ffmpeg CPU "
        "| pixmesh CPU | CPU ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [fig.line(name) for name, fig in figures.items()]
    rss = [(n, f) for n, f in figures.items() if f.peak_rss]
    if rss:
        lines += ["", "Peak memory of the imaging worker's process tree during the poster jobs:"]
        lines += [
            f"- {name}: RSS summed over the processes {f.peak_rss / 2**20:.0f} MiB, PSS "
            f"(shared pages split) {f.peak_pss / 2**20:.0f} MiB ({_parts(f.parts)}), largest "
            f"child process {f.peak_child / 2**20:.0f} MiB RSS"
            for name, f in rss
        ]
    for when, (rss_sum, pss_sum, child, parts) in idle.items():
        lines.append(
            f"- between jobs ({when}): RSS summed {rss_sum / 2**20:.0f} MiB, PSS "
            f"{pss_sum / 2**20:.0f} MiB ({_parts(parts)}), largest child {child / 2**20:.0f} MiB"
        )
    return "\n".join(lines)


def _parts(parts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {size / 2**20:.0f}" for name, size in parts.items())


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", default="30s,2min,10min,4k", help="of: " + ",".join(CLIPS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--make-only", action="store_true", help="make the clips and stop")
    args = parser.parse_args(argv)
    if args.make_only:
        for name in args.clips.split(","):
            make_clip(CLIPS[name])
        return 0
    before = _load()
    figures = bench(args)
    print(report(figures, args, (before, _load())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
