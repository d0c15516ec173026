from __future__ import annotations

from services.runtime.settings import WorkerSettings


class MetadataSettings(WorkerSettings):
    service_name: str = "metadata"
    grpc_port: int = 50055
    metrics_port: int = 9105

    # Privacy policy (PIXMESH_STRIP_GPS): never store or return a GPS position, whether from
    # EXIF or XMP. Applies to what is extracted from then on; rows stored before keep theirs
    # until their image is read again.
    strip_gps: bool = False
