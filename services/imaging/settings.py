from __future__ import annotations

from services.imaging.limits import Limits
from services.runtime.settings import WorkerSettings


class ImagingSettings(WorkerSettings):
    service_name: str = "imaging"
    grpc_port: int = 50053

    @property
    def limits(self) -> Limits:
        return Limits(
            max_input_bytes=self.max_input_bytes,
            max_pixels=self.max_pixels,
            max_frames=self.max_frames,
            max_output_dimension=self.max_output_dimension,
            max_operations=self.max_operations,
        )
