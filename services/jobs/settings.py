from __future__ import annotations

from pydantic import Field, SecretStr

from services.runtime.settings import WorkerSettings


class JobsSettings(WorkerSettings):
    service_name: str = "jobs"
    grpc_port: int = 50052
    metrics_port: int = 9102
    # Wall-clock budget of a whole job; past it the job fails with DEADLINE_EXCEEDED.
    job_timeout_s: float = Field(default=600.0, gt=0)
    # How often the reaper looks for jobs past their deadline.
    reaper_interval_s: float = Field(default=5.0, gt=0)
    # Base URL of the front proxy, used to build download paths in responses.
    public_base_url: str = "http://127.0.0.1:8080"
    # Webhooks (README, "Webhooks"): the key that signs deliveries of jobs whose webhook has no
    # secret of its own (none: such deliveries go unsigned), the attempts before a delivery is
    # FAILED, each attempt's timeout, and the retry delay: base * 2^(attempt-1), capped, jittered.
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_backoff_s: float = Field(default=10.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)
    # The gateway's rule, checked again before each attempt (DNS may change after CreateJob).
    webhook_allow_private: bool = False
