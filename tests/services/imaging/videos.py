"""Videos for tests, generated with PyAV (nothing binary is checked in), and a hostile corpus.

Clips are small (a few seconds at 160x96 or so) so that each costs milliseconds to make. Every
frame differs from its neighbours (a textured scene that scrolls, and a bar whose position is the
frame index), so a test can tell which frame it got; stretches can be made black.

The hostile corpus mirrors `hostile.py` for images: each `VideoCase` says where pixmesh must stop
it and with which reason, at upload (`UPLOAD`: the header shows it) or in the worker (`JOB`).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import av
import numpy as np
import numpy.typing as npt

from services.runtime.video import (
    BAD_FRAME_RATE,
    NO_VIDEO_STREAM,
    TOO_MANY_PIXELS,
    TOO_MANY_STREAMS,
    VIDEO_CORRUPT,
)

UPLOAD = "upload"
JOB = "job"
OK = "ok"  # not refused: FFmpeg recovers, or the frames are all black (EXACT plus a warning)


def scene(width: int, height: int, index: int) -> npt.NDArray[np.uint8]:
    """Frame `index`: a sharp texture scrolled by 3 px a frame, and a white bar at x = index."""
    rng = np.random.default_rng(7)
    base = rng.integers(40, 216, (height // 4 + 1, (width + 3 * 400) // 4 + 1, 3), dtype=np.uint8)
    texture = base.repeat(4, axis=0).repeat(4, axis=1)
    shift = (3 * index) % (texture.shape[1] - width)
    frame = np.ascontiguousarray(texture[:height, shift : shift + width])
    frame[: max(2, height // 12), index % width] = 255
    return frame


def write_clip(
    target: str | io.BytesIO,
    seconds: float,
    *,
    fps: int | Fraction = 25,
    size: tuple[int, int] = (160, 96),
    container: str = "mp4",
    codec: str = "libx264",
    gop: int | None = None,
    black: Sequence[tuple[float, float]] = (),
    rotation: int | None = None,
    faststart: bool = False,
    audio: bool = False,
    content: Callable[[int, int, int], npt.NDArray[np.uint8]] = scene,
    options: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Encode `seconds` of `content` (black inside the `black` spans) into `target`, with
    container `tags` (creation_time, location, ...)."""
    width, height = size
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(target, "w", format=container, options=opts) as out:
        out.metadata.update(tags or {})
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=8000) if audio else None
        count = round(seconds * float(fps))
        for i in range(count):
            t = i / float(fps)
            dark = any(a <= t < b for a, b in black)
            pixels = np.zeros((height, width, 3), np.uint8) if dark else content(width, height, i)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1) / Fraction(fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            _silence(out, sound, seconds)


def _silence(out: av.container.OutputContainer, sound: av.AudioStream, seconds: float) -> None:
    samples = 1024
    for k in range(int(seconds * 8000 / samples)):
        chunk = av.AudioFrame.from_ndarray(
            np.zeros((1, samples), np.float32), format="fltp", layout="mono"
        )
        chunk.sample_rate = 8000
        chunk.pts = k * samples
        out.mux(sound.encode(chunk))
    out.mux(sound.encode(None))


def clip_bytes(seconds: float = 2.0, **kwargs: object) -> bytes:
    """`write_clip` into memory; containers that rewrite their start (faststart) need a file."""
    if kwargs.get("faststart"):
        fd, path = tempfile.mkstemp(suffix=".mp4")
        os.close(fd)
        try:
            write_clip(path, seconds, **kwargs)  # type: ignore[arg-type]
            with open(path, "rb") as f:
                return f.read()
        finally:
            os.remove(path)
    buf = io.BytesIO()
    write_clip(buf, seconds, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_all(data: bytes) -> list[tuple[float, npt.NDArray[np.uint8]]]:
    """Every frame (time, RGB pixels) decoded from the start, the independent reference that
    seeking is checked against."""
    with av.open(io.BytesIO(data)) as media:
        stream = media.streams.video[0]
        start = stream.start_time or 0
        return [
            (float((f.pts - start) * stream.time_base), f.to_ndarray(format="rgb24"))
            for f in media.decode(stream)
        ]


def shown_at(frames: list[tuple[float, npt.NDArray[np.uint8]]], t: float) -> int:
    """Index of the first frame at or after `t` (the last frame when `t` is past it)."""
    for i, (when, _) in enumerate(frames):
        if when >= t - 1e-9:
            return i
    return len(frames) - 1


class RangeServer:
    """Bytes served over HTTP range requests on loopback, as a presigned GET URL serves them,
    each request's Range header recorded in `ranges`. With `drop_idle`, the server closes the
    connection after each answer without saying so, as servers close idle keep-alive ones."""

    def __init__(self) -> None:
        self.data = b""
        self.ranges: list[str] = []
        self.drop_idle = False
        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _range_handler(self))
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def url(self, data: bytes, *, drop_idle: bool = False) -> str:
        self.data, self.ranges, self.drop_idle = data, [], drop_idle
        return f"http://127.0.0.1:{self._http.server_port}/video.mp4?X-Amz-Signature=x"

    def sizes(self) -> list[int | None]:
        """The length each request asked for (None: open-ended, `bytes=N-`)."""
        spans = [r.removeprefix("bytes=").partition("-") for r in self.ranges]
        return [int(last) - int(first) + 1 if last else None for first, _, last in spans]

    def __enter__(self) -> RangeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def _range_handler(server: RangeServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Ranges(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range", "")
            server.ranges.append(rng)
            data = server.data
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first or 0)
            end = min(int(last) if last else len(data) - 1, len(data) - 1)
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # FFmpeg closes once it has read what it wanted
                self.wfile.write(body)
            if server.drop_idle:
                self.close_connection = True

    return Ranges


# --- the hostile corpus ----------------------------------------------------------------------


@dataclass(frozen=True)
class VideoCase:
    name: str
    make: Callable[[], bytes]
    stage: str
    reason: str | None


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    out = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind, pos, pos + size))
        pos += size
    return out


def _box(data: bytes, kind: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    for k, s, e in _boxes(data, start, len(data) if end is None else end):
        if k == kind:
            return s, e
    raise LookupError(kind)


@cache
def _faststart() -> bytes:
    return clip_bytes(1.0, size=(64, 48), faststart=True)


def truncated() -> bytes:
    """An MP4 with its `moov` at the end, cut in half: no index at all."""
    data = clip_bytes(1.0, size=(64, 48))
    return data[: len(data) // 2]


def truncated_media() -> bytes:
    """`moov` first and intact, `mdat` cut at a third: the header promises frames the data lacks."""
    data = _faststart()
    return data[: len(data) // 3]


def broken_moov() -> bytes:
    """The sample-size table inside `moov` claims 2^31 samples in a box of a few hundred bytes."""
    data = bytearray(_faststart())
    at = data.find(b"stsz") + 12
    data[at : at + 4] = struct.pack(">I", 0x7FFFFFFF)
    return bytes(data)


def timescale_zero() -> bytes:
    """The media time scale (`mdhd`) zeroed: FFmpeg then derives a rate of ~0.002 frames/s."""
    data = bytearray(_faststart())
    at = data.find(b"mdhd") + 4 + 12
    data[at : at + 4] = b"\0\0\0\0"
    return bytes(data)


def huge_dimensions() -> bytes:
    """One flat 8192x4608 frame (37.7 MP, over the 36 MP default): 100 kB that would decode to
    113 MB of RGB, refused from the header."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
        stream.width, stream.height = 8192, 4608
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame(8192, 4608, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([128]) * plane.buffer_size)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def zero_duration() -> bytes:
    """Durations in `mvhd`, `tkhd` and `mdhd` zeroed."""
    data = bytearray(_faststart())
    for kind, offset in ((b"mvhd", 16), (b"mdhd", 16), (b"tkhd", 20)):
        at = data.find(kind) + 4 + offset
        data[at : at + 4] = b"\0\0\0\0"
    return bytes(data)


def audio_only() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        _silence(out, out.add_stream("aac", rate=8000), 1.0)
    return buf.getvalue()


def many_streams(count: int = 3000) -> bytes:
    """The video track copied `count` times into `moov` (unique track ids)."""
    data = _faststart()
    m_start, m_end = _box(data, b"moov")
    t_start, t_end = _box(data, b"trak", m_start + 8, m_end)
    trak = data[t_start:t_end]
    copies = bytearray()
    tkhd = trak.find(b"tkhd")
    for i in range(count):
        copy = bytearray(trak)
        copy[tkhd + 12 : tkhd + 16] = struct.pack(">I", i + 2)
        copies += copy
    moov_size = struct.pack(">I", m_end - m_start + len(copies))
    return data[:m_start] + moov_size + data[m_start + 4 : t_end] + bytes(copies) + data[t_end:]


def fps_huge() -> bytes:
    """A frame rate of 1e9 (a time base of 1 ns, a frame every nanosecond)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10**9)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(scene(64, 48, i), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def avi_rate_zero() -> bytes:
    """An AVI whose stream header declares a rate of 0 (dwRate = 0): FFmpeg takes the frame
    rate from the MPEG-4 bitstream instead, so the video is read at its real 25 fps."""
    buf = io.BytesIO()
    write_clip(buf, 1.0, size=(64, 48), container="avi", codec="mpeg4")
    data = bytearray(buf.getvalue())
    strh = data.find(b"strh")
    data[strh + 8 + 24 : strh + 8 + 28] = b"\0\0\0\0"
    return bytes(data)


def garbage_after_magic() -> bytes:
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + os.urandom(4000)


def all_black() -> bytes:
    return clip_bytes(2.0, size=(64, 48), black=[(0.0, 10.0)])


HOSTILE: tuple[VideoCase, ...] = (
    VideoCase("truncated", truncated, UPLOAD, VIDEO_CORRUPT),
    VideoCase("truncated_media", truncated_media, JOB, VIDEO_CORRUPT),
    VideoCase("broken_moov", broken_moov, UPLOAD, VIDEO_CORRUPT),
    VideoCase("huge_dimensions", huge_dimensions, UPLOAD, TOO_MANY_PIXELS),
    VideoCase("zero_duration", zero_duration, UPLOAD, VIDEO_CORRUPT),
    VideoCase("audio_only", audio_only, UPLOAD, NO_VIDEO_STREAM),
    VideoCase("many_streams", many_streams, UPLOAD, TOO_MANY_STREAMS),
    VideoCase("fps_1e9", fps_huge, UPLOAD, BAD_FRAME_RATE),
    VideoCase("fps_0", timescale_zero, UPLOAD, BAD_FRAME_RATE),
    VideoCase("fps_0_avi", avi_rate_zero, OK, None),
    VideoCase("garbage_after_magic", garbage_after_magic, UPLOAD, VIDEO_CORRUPT),
    VideoCase("all_black", all_black, OK, None),
)
