"""What a video job's child sends back. Its own module, with no decoder imports: the service
process unpickles it, and importing `video.run` there would load PyAV and numpy (~30 MiB) into a
process that never decodes."""

from __future__ import annotations

from dataclasses import dataclass, field

from pixmesh.common.v1 import job_pb2
from services.imaging.pipeline import Outputs


@dataclass(frozen=True)
class VideoOutputs(Outputs):
    """Outputs, plus how the video operation ran (which frame each position got, warnings)."""

    reports: tuple[job_pb2.OperationReport, ...] = field(default=())
