"""What a poster job's decoding child reads from storage: requests, bytes, and what serving them
costs the storage server. It prints figures, it does not pass or fail. Results: BENCHMARKS.md
(Video, run 9).

    flock /tmp/pixmesh-bench.lock .venv/bin/python -m bench.video_reads
    .venv/bin/python -m bench.video_reads --clip 4k --max-blocks 256,1024 --rounds 5

The child's reads for a poster job (video_frames, EXACT): open the video from a presigned URL
(header, FFmpeg's stream-info probe, the rotation walk), then three seeks at 10/50/95 % of the
duration, each decoding forward to its frame (`decode.Video.frame_at`). Two ways of reading:

- `ffmpeg`: the URL string handed to FFmpeg, whose HTTP client opens with a GET from byte 0 to
  the end of the file and seeks with new open-ended GETs (the worker before run 9); the probe's
  own reads (size, magic bytes, `tkhd`) through RangeReaders of their own;
- `reader-N`: one `RangeReader` over the URL handed to FFmpeg as a file (the worker since run
  9): every request has an end; fetches start at `RangeReader.block` after a jump and double
  while FFmpeg reads on, up to N KiB.

(a) pattern    a local range server (a thread of this process) serving the clip from disk:
               requests, bytes asked for (an open-ended request: to the end of the file) and
               bytes sent (what the server wrote before the client hung up: an open-ended GET
               sends until the socket buffers are full), for the open and for each seek.
(b) seaweedfs  a SeaweedFS of its own with the local stack's flags, the clip PUT once: the
               server's CPU seconds (/proc) per job and the job's wall time, ways interleaved
               round by round; medians.

The clips are bench/video.py's (`--clip`, made there once if missing).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import httpx

from bench.seaweedfs import _cpu_s, _s3, _stop
from bench.video import CLIPS, FRACTIONS, make_clip
from deploy.local import Ports
from deploy.local.servers import s3_identities, seaweedfs_spec
from services.imaging.video.decode import Video
from services.runtime.video import RangeReader, VideoLimits

Snapshot = tuple[int, int, int]  # requests, bytes asked for, bytes sent


@dataclass
class Counts:
    """What the local range server served, under a lock (one thread per connection)."""

    requests: int = 0
    asked: int = 0
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> Snapshot:
        with self.lock:
            return self.requests, self.asked, self.sent


def _range_handler(path: Path, counts: Counts) -> type[http.server.BaseHTTPRequestHandler]:
    size = path.stat().st_size

    class Ranges(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            first, _, last = (
                self.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
            )
            start = int(first or 0)
            end = min(int(last), size - 1) if last else size - 1
            with counts.lock:
                counts.requests += 1
                counts.asked += end - start + 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            with path.open("rb") as f:
                f.seek(start)
                left = end - start + 1
                try:
                    while left > 0:
                        chunk = f.read(min(64 * 1024, left))
                        self.wfile.write(chunk)
                        with counts.lock:
                            counts.sent += len(chunk)
                        left -= len(chunk)
                except OSError:  # the client hung up (FFmpeg seeking away)
                    self.close_connection = True

    return Ranges


@contextlib.contextmanager
def range_server(path: Path) -> Iterator[tuple[str, Counts]]:
    counts = Counts()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _range_handler(path, counts))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{path.name}?X-Amz-Signature=x", counts
    finally:
        server.shutdown()
        server.server_close()


def reader(way: str) -> type[RangeReader]:
    """`reader-M`: RangeReader with max_block M KiB; `reader-M-B`: and its first block B KiB."""
    kib = [int(k) * 1024 for k in way.split("-")[1:]]
    sizes = {"max_block": kib[0]} | ({"block": kib[1]} if len(kib) > 1 else {})
    return type(f"RangeReader_{way}", (RangeReader,), sizes)


def poster(url: str, way: str, mark: Callable[[str], None] = lambda _: None) -> None:
    """The child's reads of a poster job: open, then the frame at each fraction."""
    with contextlib.ExitStack() as stack:
        source: str | IO[bytes] = url
        if way != "ffmpeg":
            source = cast(IO[bytes], stack.enter_context(reader(way)(url)))
        video = stack.enter_context(Video(source, VideoLimits()))
        mark("open")
        for i, fraction in enumerate(FRACTIONS):
            video.frame_at(fraction * video.duration_s)
            mark(f"seek {i + 1}")


class Parts:
    """`mark(label)` after each part of a job: what the server served since the last mark."""

    def __init__(self, counts: Counts) -> None:
        self.counts = counts
        self.parts: list[tuple[str, Snapshot, float]] = []
        self._last, self._t = counts.snapshot(), time.perf_counter()

    def mark(self, label: str) -> None:
        wall = time.perf_counter() - self._t
        time.sleep(0.2)  # the server notices a hang-up and stops counting what it sends
        now = self.counts.snapshot()
        delta = cast(Snapshot, tuple(b - a for a, b in zip(self._last, now, strict=True)))
        self.parts.append((label, delta, wall))
        self._last, self._t = now, time.perf_counter()


def pattern(path: Path, ways: Sequence[str]) -> list[str]:
    lines = [
        "| way | part | requests | asked for | sent | wall |",
        "|---|---|---|---|---|---|",
    ]
    with range_server(path) as (url, counts):
        for way in ways:
            job = Parts(counts)
            poster(url, way, job.mark)
            for label, (requests, asked, sent), wall in job.parts:
                lines.append(
                    f"| {way} | {label} | {requests} | {asked / 1e6:.2f} MB | {sent / 1e6:.2f} MB "
                    f"| {wall * 1000:.0f} ms |"
                )
            total = [sum(p[1][k] for p in job.parts) for k in range(3)]
            lines.append(
                f"| **{way}** | **job** | **{total[0]}** | {total[1] / 1e6:.2f} MB | "
                f"**{total[2] / 1e6:.2f} MB** | {sum(p[2] for p in job.parts) * 1000:.0f} ms |"
            )
    return lines


@contextlib.contextmanager
def seaweedfs(path: Path) -> Iterator[tuple[str, int]]:
    """A SeaweedFS with the stack's flags holding the clip: (presigned GET URL, server pid)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-video-reads-"))
    ports = Ports.free()
    identities = tmp / "identities.json"
    identities.write_text(s3_identities())
    spec = seaweedfs_spec(ports, tmp / "data", identities)
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    with (tmp / "weed.log").open("ab") as log:
        proc = subprocess.Popen(
            spec.argv, env=dict(spec.env or os.environ), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{ports.s3}/healthz", timeout=1).status_code < 500:
                    break
            time.sleep(0.3)
        s3 = _s3(ports)
        put = s3.generate_presigned_url(
            "put_object", Params={"Bucket": "bench", "Key": path.name}, ExpiresIn=3600
        )
        with path.open("rb") as f:  # one streamed PUT, as bench/video.py uploads
            httpx.put(put, content=f, timeout=600).raise_for_status()
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": "bench", "Key": path.name}, ExpiresIn=3600
        )
        yield url, proc.pid
    finally:
        _stop(proc)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def storage(path: Path, ways: Sequence[str], rounds: int) -> list[str]:
    cpu: dict[str, list[float]] = {way: [] for way in ways}
    wall: dict[str, list[float]] = {way: [] for way in ways}
    with seaweedfs(path) as (url, pid):
        for way in ways:  # warm-up: the server's caches, this process's imports
            poster(url, way)
        for r in range(rounds):
            for way in ways:
                time.sleep(0.5)
                c0, t0 = _cpu_s(pid), time.perf_counter()
                poster(url, way)
                wall[way].append(time.perf_counter() - t0)
                time.sleep(0.3)  # the server finishes what it was sending
                cpu[way].append(_cpu_s(pid) - c0)
            print(f"round {r + 1} done", file=sys.stderr, flush=True)
    lines = [
        f"| way | SeaweedFS CPU per job (median of {rounds}) | all rounds | job wall |",
        "|---|---|---|---|",
    ]
    for way in ways:
        lines.append(
            f"| {way} | **{statistics.median(cpu[way]):.2f} s** | "
            f"{' / '.join(f'{c:.2f}' for c in cpu[way])} s | "
            f"{statistics.median(wall[way]):.2f} s |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", default="10min", help="of: " + ",".join(CLIPS))
    parser.add_argument(
        "--max-blocks", default="256,1024,4096", help="KiB, comma-separated; M-B: first block B"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="pattern,seaweedfs")
    args = parser.parse_args(argv)
    clip = CLIPS[args.clip]
    make_clip(clip)
    ways = ["ffmpeg", *(f"reader-{k}" for k in args.max_blocks.split(","))]
    size_mb = clip.path.stat().st_size / 1e6
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench/video_reads.py --clip {args.clip} ({size_mb:.0f} MB); load average {load}")
    if "pattern" in args.parts:
        print(
            "\n".join(
                ["", "(a) pattern, local range server, one job each:", *pattern(clip.path, ways)]
            )
        )
    if "seaweedfs" in args.parts:
        lines = storage(clip.path, ways, args.rounds)
        print("\n".join(["", "(b) SeaweedFS:", *lines]))
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
