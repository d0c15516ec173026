"""Typed settings shared by every service.

Each service subclasses `ServiceSettings` in its own `settings.py`, the only place that reads the
environment. Variables are prefixed `PIXMESH_` (e.g. `PIXMESH_NATS_URL`); OpenTelemetry is
configured by the standard `OTEL_*` variables, read by the SDK itself.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIXMESH_", extra="ignore", frozen=True)

    # Name used for logs, traces (unless OTEL_SERVICE_NAME is set) and the task subject.
    service_name: str = "pixmesh"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    log_level: str = "INFO"
    # Prometheus text exposition at http://<metrics_host>:<metrics_port>/metrics; 0 turns it off.
    # Each service has its own default port (gateway 9101 ... metadata 9105).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0, le=65535)

    # One server, or several separated by commas (the nodes of a cluster; the client fails over).
    nats_url: str = "nats://127.0.0.1:4222"
    # Replicas of every JetStream stream (1 on one node; 3 on a 3-node cluster). Applied at start:
    # an existing stream with another value is updated.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # PIXMESH_EVENTS retention (README, "Retention"), applied at start like the replicas: task
    # and upload events are kept this long (their consumers read them within seconds; the age is
    # what an outage of a consumer may last without losing events), up to this many bytes (the
    # oldest go first; -1: no limit; NATS reserves it on disk per replica), and a job event
    # (read live only, by WatchJob) this long. The age may be set as low as 5 minutes (longer
    # than a consumer's redeliveries with the default ack wait), e.g. for bench/soak.py to see
    # the stream level off within a run.
    events_max_age_s: float = Field(default=24 * 3600.0, ge=300.0)
    events_max_bytes: int = Field(default=1024**3, ge=-1)
    job_event_ttl_s: float = Field(default=3600.0, ge=1.0)
    database_url: str = "postgresql://pixmesh@127.0.0.1:5432/pixmesh"
    redis_url: str = "redis://127.0.0.1:6379/0"

    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_bucket: str = "pixmesh"
    s3_region: str = "us-east-1"
    # The key every service of a deployment signs and checks service tokens with
    # (services/runtime/trust.py); empty: internal calls are not authenticated (a warning).
    service_token_secret: SecretStr = SecretStr("")
    # Fernet keys sealing secrets stored in Postgres (services/runtime/secrets.py), a JSON list:
    # the first encrypts, all decrypt (rotation); empty: stored unencrypted (a warning).
    secrets_keys: list[SecretStr] = Field(default_factory=list)
    s3_access_key: SecretStr = SecretStr("pixmesh")
    s3_secret_key: SecretStr = SecretStr("pixmesh-secret")

    # Seconds to finish in-flight work after SIGTERM before the server is stopped.
    drain_timeout_s: float = Field(default=20.0, gt=0)
    # Default deadline for outbound calls when the caller gave none.
    call_timeout_s: float = Field(default=10.0, gt=0)
    # A client connection is asked to reconnect (GOAWAY; calls in flight finish) after this many
    # seconds, so that callers re-resolve a DNS name and spread over replicas added since (0: never).
    max_connection_age_s: float = Field(default=300.0, ge=0)
    # Largest gRPC message accepted or sent (raw REST uploads arrive as one message).
    max_message_bytes: int = Field(default=80 * 1024 * 1024, ge=4 * 1024 * 1024)

    # Image limits, the same for every service (the gateway checks them on upload from the
    # header, the workers again before decoding).
    max_input_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=50_000_000, ge=1)
    max_frames: int = Field(default=100, ge=1)
    max_output_dimension: int = Field(default=8192, ge=16, le=16383)
    max_operations: int = Field(default=16, ge=1)
    max_renditions: int = Field(default=10, ge=1, le=100)
    # Video limits (issue 13, services/runtime/video.py), checked from the container header at
    # upload and again by the imaging worker; max_pixels applies to each frame (at most 36 MP).
    # A streamed or registered upload waits in a temporary file of the gateway while it is
    # checked (raw REST bodies arrive whole, at most max_message_bytes).
    max_video_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    max_video_duration_s: float = Field(default=4 * 3600.0, gt=0)
    max_video_streams: int = Field(default=16, ge=1)

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def nats_servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


class WorkerSettings(ServiceSettings):
    """Settings of a service that pulls tasks from JetStream."""

    # Tasks processed at once by this process.
    concurrency: int = Field(default=2, ge=1, le=256)
    # Tasks the durable consumer hands out unacked, summed over every replica of the service: the
    # fleet's ceiling on work in flight. Size it above replicas x concurrency at the largest scale.
    max_ack_pending: int = Field(default=1000, ge=1)
    # Threads for CPU work (Pillow, onnxruntime); never the event loop.
    cpu_workers: int = Field(default=2, ge=1, le=256)
    # Redelivery timer of the durable consumer; in_progress() is sent every ack_wait/3.
    ack_wait_s: float = Field(default=30.0, gt=1)
    # Deliveries before a task is dead-lettered.
    max_deliver: int = Field(default=5, ge=1, le=100)
    # A task still running this long after it was taken reports TaskStarted (the job shows
    # RUNNING); one that ends sooner sends its TaskCompleted alone, with the attempt in it: one
    # event, one jobs transaction and one job event less per fast task. A task that fails
    # reports its start first. 0: always report the start at once.
    started_delay_s: float = Field(default=0.25, ge=0)
