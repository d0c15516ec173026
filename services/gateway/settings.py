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

    # Upload limits, checked from the header before any pixel is decoded.
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=100_000_000, ge=1)
    max_frames: int = Field(default=500, ge=1)
    max_output_dimension: int = Field(default=16384, ge=16)
    max_operations: int = Field(default=32, ge=1)

    # How long an idempotency key is remembered in Redis (Postgres keeps it for good).
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # How long authenticated API keys and worker capabilities are cached in-process.
    cache_ttl_s: float = Field(default=30.0, ge=0)
