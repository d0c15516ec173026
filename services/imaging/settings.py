from __future__ import annotations

from pydantic import Field

from services.imaging.encode import MAX_WEBP_EFFORT, WEBP_EFFORT
from services.imaging.isolation import IsolationConfig
from services.imaging.limits import Limits
from services.runtime.settings import WorkerSettings


class ImagingSettings(WorkerSettings):
    service_name: str = "imaging"
    grpc_port: int = 50053
    metrics_port: int = 9103

    # Each pipeline runs in a child process (services/imaging/isolation.py); `cpu_workers` is
    # how many. Address-space limit of one child in MiB (0: none): enough for the largest
    # image the limits allow (50 MP RGBA is 200 MiB, and a step may hold two copies).
    worker_memory_mb: int = Field(default=1024, ge=0)
    # Tasks a child runs before it is replaced, to hand fragmented heap back to the OS.
    worker_max_tasks: int = Field(default=200, ge=1)
    # A child still busy this long after the task's deadline is killed.
    worker_kill_grace_s: float = Field(default=2.0, ge=0)
    # Pipeline children beyond cpu_workers that only interactive tasks use: a batch fills the
    # cpu_workers others and an interactive task never waits for a slot (isolation.py, "Lanes").
    worker_interactive_slots: int = Field(default=1, ge=0, le=16)
    # How many steps nicer than the service (nice(1)) a batch task's pipeline process runs, so
    # that interactive tasks and the rest of the mesh get the cores first (0: no lower).
    worker_batch_nice: int = Field(default=10, ge=0, le=19)
    # WebP encoder effort (libwebp method) when a Convert does not set `effort`: lower trades
    # bytes for CPU (see encode.WEBP_EFFORT for the measured trade).
    webp_effort: int = Field(default=WEBP_EFFORT, ge=0, le=MAX_WEBP_EFFORT)

    @property
    def limits(self) -> Limits:
        return Limits.of(self)

    @property
    def isolation(self) -> IsolationConfig:
        return IsolationConfig(
            workers=self.cpu_workers,
            memory_limit_bytes=self.worker_memory_mb * 1024 * 1024 or None,
            max_pixels=self.max_pixels,
            max_tasks_per_child=self.worker_max_tasks,
            kill_grace_s=self.worker_kill_grace_s,
            interactive_slots=self.worker_interactive_slots,
            batch_nice=self.worker_batch_nice,
            service_name=self.service_name,
            log_level=self.log_level,
        )
