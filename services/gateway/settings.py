from __future__ import annotations

from pydantic import Field

from services.runtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    grpc_port: int = 50051

    jobs_addr: str = "127.0.0.1:50052"
    imaging_addr: str = "127.0.0.1:50053"
    inference_addr: str = "127.0.0.1:50054"
    metadata_addr: str = "127.0.0.1:50055"

    # How long an idempotency key is remembered in Redis (Postgres keeps it for good).
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # How long authenticated API keys and worker capabilities are cached in-process.
    cache_ttl_s: float = Field(default=30.0, ge=0)
