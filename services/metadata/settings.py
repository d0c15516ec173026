from __future__ import annotations

from services.runtime.settings import WorkerSettings


class MetadataSettings(WorkerSettings):
    service_name: str = "metadata"
    grpc_port: int = 50055
