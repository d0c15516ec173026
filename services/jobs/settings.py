from __future__ import annotations

from pydantic import Field

from services.runtime.settings import WorkerSettings


class JobsSettings(WorkerSettings):
    service_name: str = "jobs"
    grpc_port: int = 50052
    # Wall-clock budget of a whole job; past it the job fails with DEADLINE_EXCEEDED.
    job_timeout_s: float = Field(default=600.0, gt=0)
    # How often the reaper looks for jobs past their deadline.
    reaper_interval_s: float = Field(default=5.0, gt=0)
    # Base URL of the front proxy, used to build download paths in responses.
    public_base_url: str = "http://127.0.0.1:8080"
