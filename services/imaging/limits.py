"""The limits every image and pipeline must respect, checked before any pixel is decoded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from pixmesh.common.v1 import image_pb2
from services.runtime.imageprobe import ProbeLimits

if TYPE_CHECKING:
    from services.runtime.video import VideoLimits


@dataclass(frozen=True)
class Limits:
    max_input_bytes: int = 50 * 1024 * 1024
    # Per frame, and for all frames of an animation together.
    max_pixels: int = 50_000_000
    max_frames: int = 100
    # Widest/tallest image any step may produce (WebP cannot exceed 16383).
    max_output_dimension: int = 8192
    max_operations: int = 16
    # Outputs of one job (each rendition's pipeline must also fit max_operations).
    max_renditions: int = 10

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def probe(self) -> ProbeLimits:
        return ProbeLimits(self.max_input_bytes, self.max_pixels, self.max_frames)

    @classmethod
    def of(cls, source: object) -> Limits:
        """The limits named as attributes of `source` (the worker's settings)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    def to_proto(self, video: VideoLimits) -> image_pb2.Limits:
        # The message's fields are named as this class's, plus the video ones (issue 13).
        return image_pb2.Limits(
            **asdict(self),
            max_video_bytes=video.max_bytes,
            max_video_duration_s=video.max_duration_s,
            max_video_streams=video.max_streams,
        )
