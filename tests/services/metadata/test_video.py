"""Video metadata: the header and QuickTime/MP4 tags, with camera, creation time and GPS in the
fields search uses; no frame is decoded."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from services.metadata.extract import extract
from services.metadata.video import parse_iso6709
from services.runtime.errors import InvalidArgument
from tests.services.imaging import videos


def tagged(container: str, tags: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        out.metadata.update(tags)
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for _ in range(25):
            frame = np.zeros((48, 64, 3), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return buf.getvalue()


def test_a_phone_video_has_its_camera_time_and_place() -> None:
    data = tagged(
        "mov",
        {
            "creation_time": "2024-05-01T10:20:30.000000Z",
            "location": "+48.8584+002.2945+035.000/",
            "make": "Apple",
            "model": "iPhone 15",
        },
    )
    md = extract(data)
    assert (md.width, md.height, md.duration_ms, md.size_bytes) == (64, 48, 1000, len(data))
    assert md.video.info.codec == "h264"
    assert md.video.info.fps == pytest.approx(25.0)
    assert md.video.location == "+48.8584+002.2945+035.000/"
    assert md.video.creation_time.ToJsonString() == "2024-05-01T10:20:30Z"
    assert (md.exif.make, md.exif.model) == ("Apple", "iPhone 15")
    assert md.exif.date_taken.ToJsonString() == "2024-05-01T10:20:30Z"
    assert (md.exif.gps.latitude, md.exif.gps.longitude) == (48.8584, 2.2945)
    assert md.exif.gps.altitude_m == 35.0
    assert not md.warnings
    assert not md.HasField("colors")  # nothing decoded


def test_an_untagged_video_has_its_header_only() -> None:
    md = extract(videos.clip_bytes(2.0, audio=True))
    assert md.video.info.audio_codec == "aac"
    assert md.video.info.stream_count == 2
    assert not md.HasField("exif")
    assert md.duration_ms == 2000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+37.4219-122.0840/", (37.4219, -122.084, None)),
        ("-33.8568+151.2153+005.5/", (-33.8568, 151.2153, 5.5)),
        ("+91.0000+000.0000/", None),
        ("somewhere nice", None),
        ("", None),
    ],
)
def test_iso6709(text: str, expected: tuple[float, float, float | None] | None) -> None:
    gps = parse_iso6709(text)
    if expected is None:
        assert gps is None
        return
    assert gps is not None
    altitude = gps.altitude_m if gps.HasField("altitude_m") else None
    assert (gps.latitude, gps.longitude, altitude) == expected


def test_a_broken_video_is_refused_like_a_broken_image() -> None:
    with pytest.raises(InvalidArgument) as err:
        extract(videos.truncated())
    assert err.value.reason == "VIDEO_CORRUPT"
