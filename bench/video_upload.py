"""Memory of a large video upload: peak RSS of the gateway and of the metadata service while a
video is uploaded and indexed. Prints figures; results in BENCHMARKS.md (Video).

    flock /tmp/pixmesh-bench.lock .venv/bin/python -m bench.video_upload [--clip PATH]

The clip defaults to bench/video.py's 10-minute 1080p H.264 (401 MB, made once by
`python -m bench.video`). Two uploads of it on a fresh local stack, each with a distinct byte
appended at the end of the file (a new sha256, so neither is deduplicated; FFmpeg ignores bytes
after the last box): (1) the gRPC stream through Envoy (the SDK's `upload`), (2) a presigned PUT
straight to object storage and RegisterUpload. For each, the peak RSS of the gateway process and
of the metadata process (sampled every 20 ms, with their children) from the first byte sent until
the metadata service has indexed the video (GET .../metadata answers), against each process's
RSS just before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.imaging import MemorySampler, Mesh
from deploy.local import Ports, Stack
from pixmesh.client import Client

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO / ".pixmesh" / "bench-video" / "h264-1080p-10min.mp4"
MIB = 1024 * 1024


def variant(clip: Path, work: Path, tag: bytes) -> Path:
    out = work / f"{clip.stem}-{tag.hex()}{clip.suffix}"
    shutil.copyfile(clip, out)
    with out.open("ab") as f:
        f.write(b"\0\0\0\x09free" + tag)  # a `free` box: still a valid MP4
    return out


def measure(
    stack: Stack, mesh: Mesh, name: str, send: Callable[[], str], services: Sequence[str]
) -> None:
    pids = stack.pids()
    samplers = {s: MemorySampler(pids[s]) for s in services}
    before = {s: samplers[s].sample()[0] for s in services}
    t0 = time.perf_counter()
    with contextlib.ExitStack() as running:
        for sampler in samplers.values():
            running.enter_context(sampler)
        image_id = send()
        uploaded = time.perf_counter() - t0
        with mesh.client() as http:
            while http.get(f"/v1/images/{image_id}/metadata").status_code != 200:
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError("the video was not indexed in 300 s")
                time.sleep(0.05)
    indexed = time.perf_counter() - t0
    print(f"{name}: uploaded in {uploaded:.1f} s, indexed after {indexed:.1f} s")
    for s in services:
        peak = samplers[s].peak_rss
        print(
            f"  {s}: RSS {before[s] / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB "
            f"(+{(peak - before[s]) / MIB:.0f} MiB)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    args = parser.parse_args(argv)
    clip: Path = args.clip
    print(f"clip {clip.name}: {clip.stat().st_size / 1e6:.0f} MB; load {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="pixmesh-bench-upload-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, True)
        stack = Stack(work / "stack", Ports.free(), durable=False)
        cleanup.callback(stack.stop)
        stack.start()
        key = stack.create_api_key("bench")
        mesh = Mesh(stack.rest_url, key)
        services = ["gateway", "metadata"]
        with Client(stack.grpc_target, key, timeout=600) as sdk:
            stream = variant(clip, work, os.urandom(1))
            measure(stack, mesh, "gRPC stream", lambda: sdk.upload(stream).image_id, services)
            stream.unlink()
            presigned = variant(clip, work, os.urandom(1))
            measure(
                stack,
                mesh,
                "presigned PUT + register",
                lambda: sdk.upload_via_url(presigned, timeout=600).image_id,
                services,
            )
    print(f"load {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
