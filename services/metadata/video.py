"""Metadata of a video: the container header and its tags (services/runtime/video.py), no frame
decoded. The camera, the creation time and the GPS position that QuickTime/MP4 tags carry go
into `exif` as well (make, model, date_taken, gps), the fields search filters on, so videos are
found like photos."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import UTC, datetime

from pixmesh.common.v1 import metadata_pb2
from services.runtime.video import VideoHeader, VideoLimits, is_video, probe_video

# ISO 6709 as QuickTime and Android write it: "+48.8584+002.2945/", "+37.4219-122.0840+012.3/".
_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?/?$")
_MAKE = ("com.apple.quicktime.make", "make")
_MODEL = ("com.apple.quicktime.model", "model")
_LOCATION = ("com.apple.quicktime.location.ISO6709", "location", "location-eng")


__all__ = ["is_video"]


def extract_video(data: bytes, limits: VideoLimits | None = None) -> metadata_pb2.ImageMetadata:
    """Raises InvalidArgument (the probe's reasons) for bytes that are not a readable video."""
    header = probe_video(io.BytesIO(data), limits or VideoLimits())
    return _metadata(header, hashlib.sha256(data).hexdigest())


def extract_video_at(
    url: str, sha256: str, limits: VideoLimits | None = None
) -> metadata_pb2.ImageMetadata:
    """The same from a presigned GET URL of the stored video (content-addressed: `sha256` is
    its key's): FFmpeg reads the header through bounded HTTP range requests (`RangeReader`),
    so indexing a 1 GiB upload reads a few megabytes, not the file."""
    return _metadata(probe_video(url, limits or VideoLimits()), sha256)


def _metadata(header: VideoHeader, sha256: str) -> metadata_pb2.ImageMetadata:
    tags = header.tags
    md = metadata_pb2.ImageMetadata(
        width=header.width,
        height=header.height,
        frame_count=header.frame_count,
        size_bytes=header.size_bytes,
        sha256=sha256,
        duration_ms=round(header.duration_s * 1000),
        video=metadata_pb2.VideoMetadata(info=header.info(), tags=tags),
    )
    if (make := _first(tags, _MAKE)) is not None:
        md.exif.make = make
    if (model := _first(tags, _MODEL)) is not None:
        md.exif.model = model
    if (created := _creation_time(tags.get("creation_time", ""))) is not None:
        md.video.creation_time.FromDatetime(created)
        # date_taken is camera wall-clock time; a container keeps UTC: the best there is.
        md.exif.date_taken.FromDatetime(created.replace(tzinfo=None))
        md.exif.date_taken_offset = "+00:00"
    if (location := _first(tags, _LOCATION)) is not None:
        md.video.location = location
        if (gps := parse_iso6709(location)) is not None:
            md.exif.gps.CopyFrom(gps)
        else:
            md.warnings.append(f"video: unreadable location tag {location[:40]!r}")
    return md


def parse_iso6709(text: str) -> metadata_pb2.GpsLocation | None:
    match = _ISO6709.match(text.strip())
    if match is None:
        return None
    lat, lon = float(match[1]), float(match[2])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    gps = metadata_pb2.GpsLocation(latitude=lat, longitude=lon)
    if match[3] is not None:
        gps.altitude_m = float(match[3])
    return gps


def _first(tags: dict[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if value := tags.get(key, "").strip():
            return value[:255]
    return None


def _creation_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # 1904-01-01 is QuickTime's zero: a camera that never set its clock.
    return when.astimezone(UTC) if when.year > 1904 else None
