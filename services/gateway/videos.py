"""Video uploads (issue 13): a video is an asset like an image, recorded with kind VIDEO and the
header the container declares (services/runtime/video.py), read without decoding a frame.

The gateway tells a video from an image by the magic bytes alone; everything else about an
upload (content-addressed storage, the image row, the upload event) is the same as for images.
"""

from __future__ import annotations

import asyncio
from typing import IO

from pixmesh.common.v1 import image_pb2
from services.runtime.settings import ServiceSettings
from services.runtime.video import (
    VideoHeader,
    VideoLimits,
    is_video,
    limits_of,
    probe_video,
)

__all__ = ["is_video", "limits_of"]


def largest_upload(settings: ServiceSettings) -> int:
    """The most bytes an upload may have before its kind is known."""
    return max(settings.max_input_bytes, settings.max_video_bytes)


async def probe(file: IO[bytes], limits: VideoLimits) -> VideoHeader:
    """The header, off the event loop (FFmpeg parses it: C code, milliseconds), read from a
    seekable file: FFmpeg seeks to the index (a `moov` at the end) and reads only that."""
    return await asyncio.to_thread(probe_video, file, limits)


def image_of(header: VideoHeader) -> image_pb2.Image:
    """The Image record of a video (sha256, filename and ids are the caller's)."""
    return image_pb2.Image(
        kind=image_pb2.Image.VIDEO,
        width=header.width,
        height=header.height,
        frame_count=header.frame_count,
        size_bytes=header.size_bytes,
        content_type=header.mime_type,
        video=header.info(),
    )
