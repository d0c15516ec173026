from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from services.gateway.pipelines import parse_presets
from services.runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    grpc_port: int = 50051
    metrics_port: int = 9101

    jobs_addr: str = "127.0.0.1:50052"
    imaging_addr: str = "127.0.0.1:50053"
    inference_addr: str = "127.0.0.1:50054"
    metadata_addr: str = "127.0.0.1:50055"

    # How long an idempotency key is remembered in Redis (Postgres keeps it for good).
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # How long authenticated API keys and worker capabilities are cached in-process.
    cache_ttl_s: float = Field(default=30.0, ge=0)
    # Deadline of the PlanPipeline call to the imaging service (CreateJob and PlanJob).
    plan_timeout_s: float = Field(default=3.0, gt=0)
    # Named presets (PIXMESH_PRESETS, JSON): {"thumb": [{"resize": {"width": 200, "height": 200,
    # "mode": "FILL"}}, {"convert": {"format": "WEBP"}}]}; operations in their REST JSON form.
    presets: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    # Webhooks may use http:// and private, loopback or link-local hosts (local stacks, tests);
    # off in production, where a webhook must be https:// to a public address.
    webhook_allow_private: bool = False
    # Backpressure (PIXMESH_MAX_QUEUE_DEPTH): CreateJob answers RESOURCE_EXHAUSTED/QUEUE_FULL
    # (HTTP 429) while a task queue the job needs holds this many tasks (pending + unacked);
    # 0 disables the check.
    max_queue_depth: int = Field(default=1000, ge=0)
    # Presigned URLs (CreateUploadUrl, GetOutputUrl): how long each URL is valid, and the S3
    # endpoint clients reach, used only to sign them (empty: s3_endpoint, the services' own).
    upload_url_ttl_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    download_url_ttl_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    s3_public_endpoint: str = ""
    # How long after its URL expired an upload can still be registered (a PUT that began just
    # before the expiry may end after it), and a registered one is still answered on retry.
    upload_register_grace_s: int = Field(default=3600, ge=0)
    # Browser pages allowed to use presigned URLs (the bucket's CORS rules, set at start): the
    # web console's origin, which is Envoy's public address (PIXMESH_PUBLIC_BASE_URL), and
    # PIXMESH_CORS_ORIGINS (a JSON list, e.g. ["https://app.example.com"]; none by default).
    public_base_url: str = "http://127.0.0.1:8080"
    cors_origins: list[str] = Field(default_factory=list)

    # Tenant limits (services/gateway/quotas.py): the defaults for tenants whose row in
    # gateway.tenants names none (`python -m services.gateway.admin set-limits`); 0: unlimited.
    # Requests per second are per API key; the others per tenant.
    rate_limit_rps: int = Field(default=500, ge=0)
    max_running_jobs: int = Field(default=0, ge=0)
    max_jobs_per_day: int = Field(default=0, ge=0)
    max_stored_bytes: int = Field(default=0, ge=0)
    # How often the per-tenant retention (gateway.tenants.retain_*_s) is applied.
    tenant_retention_interval_s: float = Field(default=300.0, gt=0)

    @field_validator("presets")
    @classmethod
    def _presets_parse(
        cls, value: dict[str, list[dict[str, Any]]]
    ) -> dict[str, list[dict[str, Any]]]:
        parse_presets(value)  # a bad preset stops the gateway at start-up, naming the step
        return value
