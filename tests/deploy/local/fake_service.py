"""A stand-in for `python -m services.<name>`: grpc.health on PIXMESH_GRPC_PORT, nothing else.

FAKE_EXIT=N exits with N at start; FAKE_SERVING_AFTER_S=S reports NOT_SERVING for S seconds.
SIGTERM -> exit 0 (a clean drain).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> int:
    if "FAKE_EXIT" in os.environ:
        print("fake service failing on purpose", flush=True)
        return int(os.environ["FAKE_EXIT"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['PIXMESH_GRPC_PORT']}")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    time.sleep(float(os.environ.get("FAKE_SERVING_AFTER_S", "0")))
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"{os.environ['PIXMESH_SERVICE_NAME']} serving", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
