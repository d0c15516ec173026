from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from services.runtime.bus import redelivery_horizon_s
from services.runtime.settings import WorkerSettings

# Kept past the horizon below: a consumer or service restart, a clock step.
PROCESSED_EVENTS_MARGIN_S = 3600.0


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
    # Retention (README, "Retention"): how often the trim runs, and how long an applied event's
    # id is kept for dedup (default: `processed_events_horizon_s`; a shorter value is refused).
    retention_interval_s: float = Field(default=60.0, gt=0)
    processed_events_retention_s: float | None = Field(default=None, gt=0)
    # Batches (services/jobs/batches.py): jobs of one batch created but not started, at most;
    # jobs of one batch not yet ended, at most; and batch jobs are created only while the first
    # stage's task queue holds fewer undelivered tasks than `batch_lane_backlog` (the lane).
    batch_window: int = Field(default=16, ge=1)
    batch_max_open: int = Field(default=64, ge=1)
    # 2: with 1 an imaging slot waited for each next job (the stack used ~1 of 2 cores; BENCHMARKS.md
    # "Bulk", lane backlog); interactive tasks have their own slot, so 2 keeps their p95.
    batch_lane_backlog: int = Field(default=2, ge=1)
    # The feeder is woken by the job events this replica applies while a batch runs, its
    # rounds at least `batch_tick_s` apart; it looks at a running batch every `batch_resync_s`
    # when nothing woke it (another replica's job events), and `batch_tick_s` after a wake-up
    # that found the batch held by another replica.
    batch_resync_s: float = Field(default=2.0, gt=0)
    batch_tick_s: float = Field(default=0.1, gt=0)
    # How often the feeder looks for batches when none runs (a batch created on this replica
    # wakes it at once).
    batch_idle_s: float = Field(default=1.0, gt=0)
    # How long a read of a lane's backlog (a JetStream consumer info) is used, with the tasks
    # submitted since; a job event applied here makes it stale at once.
    batch_backlog_ttl_s: float = Field(default=1.0, ge=0)

    @property
    def processed_events_floor_s(self) -> float:
        """The latest a duplicate of an applied event can still change a job: while the
        event consumer redelivers it (ack wait x deliveries + nak delays), or a worker whose
        task is redelivered publishes it again (the same bound, workers sharing these
        settings), and while its job is open (`job_timeout_s`; a late event for a finished job
        is a no-op)."""
        return max(self.job_timeout_s, redelivery_horizon_s(self.ack_wait_s, self.max_deliver))

    @property
    def processed_events_horizon_s(self) -> float:
        if self.processed_events_retention_s is not None:
            return self.processed_events_retention_s
        return self.processed_events_floor_s + PROCESSED_EVENTS_MARGIN_S

    @model_validator(mode="after")
    def _retention_covers_redelivery(self) -> JobsSettings:
        wanted = self.processed_events_retention_s
        if wanted is not None and wanted < self.processed_events_floor_s:
            raise ValueError(
                f"processed_events_retention_s={wanted} is shorter than the redelivery horizon"
                f" ({self.processed_events_floor_s:.0f} s): duplicates would be applied again"
            )
        return self
