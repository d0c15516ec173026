"""Garbage collection in the services: what Python's cyclic collector costs each service per job,
and its longest pause while the jobs ran, with start-up's objects frozen out of its reach (services/runtime/server.py,
`_freeze_startup_objects`) and without. It prints figures, it does not pass or fail. Results:
BENCHMARKS.md.

    .venv/bin/python -m bench.gc                 # 1,000 cheap jobs per side
    .venv/bin/python -m bench.gc --jobs 3000

Each side is a local stack started like tests/conftest.py does (free loopback ports,
`durable=False`) whose Python processes load a probe (a `sitecustomize` on PYTHONPATH, written to
a temporary folder) that times every collection with `gc.callbacks` (CPU time of the collecting
thread, and wall time: the pause of whatever that thread was running, the event loop) and writes
its totals to a file every half second. On the "not frozen" side the probe turns `gc.freeze`
into a no-op, which is the code before the freeze. The load: bench/imaging.py's cheap jobs
(256x256 JPEG -> 64 px PNG over REST, then the watch stream), 4 clients, after a warm-up.
Figures per service: its CPU per job, the collector's CPU per job and share, collections by
generation, and the longest pause (wall time of one collection) during the measured jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.imaging import CHEAP_OPERATIONS, CHEAP_SIZE, Mesh, photo, settle

PROBE = """
import gc, json, os, sys, threading, time

_dir = os.environ.get("PIXMESH_GC_PROBE_DIR")
if _dir:
    if os.environ.get("PIXMESH_GC_PROBE_UNFROZEN") == "1":
        gc.freeze = lambda: None
    _totals = {"gc_cpu_s": [0.0, 0.0, 0.0], "count": [0, 0, 0], "pauses": []}
    _began = [0.0, 0.0]

    def _collected(phase, info):
        if phase == "start":
            _began[:] = [time.thread_time(), time.perf_counter()]
            return
        generation = info["generation"]
        _totals["gc_cpu_s"][generation] += time.thread_time() - _began[0]
        _totals["count"][generation] += 1
        pause = time.perf_counter() - _began[1]
        if pause >= 0.001 and len(_totals["pauses"]) < 100000:
            _totals["pauses"].append((time.time(), pause))

    def _write():
        path = os.path.join(_dir, f"{os.getpid()}.json")
        while True:
            time.sleep(0.5)
            with open(path + ".tmp", "w") as f:
                json.dump({"argv": sys.argv, "cpu_s": time.process_time(), **_totals}, f)
            os.replace(path + ".tmp", path)

    gc.callbacks.append(_collected)
    threading.Thread(target=_write, daemon=True).start()
"""

SERVICES = ("gateway", "jobs", "imaging")


def readings(folder: Path) -> dict[str, dict[str, Any]]:
    """The probe's last totals of each service process, by service name."""
    found = {}
    for path in folder.glob("*.json"):
        data = json.loads(path.read_text())
        argv = " ".join(data["argv"])
        for name in SERVICES:
            if f"services/{name}/__main__.py" in argv:
                found[name] = data
    return found


def side(work: Path, jobs: int, clients: int, frozen: bool) -> dict[str, dict[str, float]]:
    """One stack under the probe: per service, the differences over `jobs` measured jobs."""
    from deploy.local import Ports, Stack

    probe = work / ("frozen" if frozen else "unfrozen")
    (probe / "site").mkdir(parents=True)
    (probe / "site" / "sitecustomize.py").write_text(PROBE)
    (probe / "out").mkdir()
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(probe / "site"), *filter(None, [saved.get("PYTHONPATH")])]
    )
    os.environ["PIXMESH_GC_PROBE_DIR"] = str(probe / "out")
    os.environ["PIXMESH_GC_PROBE_UNFROZEN"] = "0" if frozen else "1"
    try:
        with contextlib.ExitStack() as cleanup:
            stack = Stack(probe / "stack", Ports.free(), durable=False)
            cleanup.callback(stack.stop)
            stack.start()
            mesh = Mesh(stack.rest_url, stack.create_api_key("bench"))
            ids = mesh.upload([photo(CHEAP_SIZE, seed=300 + i) for i in range(8)])
            body = {"operations": CHEAP_OPERATIONS, "reuse": False}
            mesh.run(ids, clients * 10, clients, body)  # warm-up
            settle(stack.pids())
            time.sleep(1.0)  # the probe's next write
            before = readings(probe / "out")
            began = time.time()
            mesh.run(ids, jobs, clients, body)
            ended = time.time()
            settle(stack.pids())
            time.sleep(1.0)
            after = readings(probe / "out")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    figures = {}
    for name in SERVICES:
        a, b = before[name], after[name]
        figures[name] = {
            "cpu_ms": (b["cpu_s"] - a["cpu_s"]) / jobs * 1000,
            "gc_ms": (sum(b["gc_cpu_s"]) - sum(a["gc_cpu_s"])) / jobs * 1000,
            "count": [b["count"][g] - a["count"][g] for g in range(3)],
            "max_pause_ms": 1000
            * max((d for t, d in b["pauses"] if began <= t <= ended), default=0),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000, help="measured cheap jobs per side")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    print(f"pixmesh gc bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{args.jobs} cheap jobs per side, {args.clients} clients; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="pixmesh-gc-") as tmp:
        for frozen in (False, True):
            figures = side(Path(tmp), args.jobs, args.clients, frozen)
            print("frozen" if frozen else "not frozen (before)")
            for name, f in figures.items():
                share = 100 * f["gc_ms"] / f["cpu_ms"] if f["cpu_ms"] else 0.0
                print(
                    f"  {name:8s} CPU {f['cpu_ms']:5.2f} ms/job, collector {f['gc_ms']:4.2f}"
                    f" ms/job ({share:3.1f}%), collections by generation {f['count']},"
                    f" longest pause {f['max_pause_ms']:5.1f} ms"
                )
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
