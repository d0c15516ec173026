"""Sniff a video's container from its bytes and read its header without decoding a frame.

The video counterpart of `imageprobe`, shared the same way: the gateway rejects bad uploads before
a job exists, the imaging worker re-checks before it seeks. The container comes from the magic
bytes, never from the client's Content-Type or file name, and FFmpeg is told to use that one
demuxer only (the `av` wheel bundles FFmpeg; no system ffmpeg), which keeps FFmpeg's hundreds of
other demuxers out of reach of hostile input.

Limits are checked cheapest first: bytes, container, streams, duration, frame rate, pixels per
frame. Only the container header is read (`moov`, EBML segment info, AVI `hdrl`, the first TS
packets); FFmpeg's stream-info probe is bounded by `probesize`/`analyzeduration`.
"""

from __future__ import annotations

import enum
import http.client
import io
import math
import os
import struct
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import IO, TYPE_CHECKING, Any, cast

from pixmesh import rules
from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.formats import sniff
from services.runtime.errors import FieldViolation, InvalidArgument, invalid

if TYPE_CHECKING:
    import av.container


EMPTY_VIDEO = "EMPTY_IMAGE"  # same reason as an empty image: the upload has no bytes
UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
VIDEO_CORRUPT = "VIDEO_CORRUPT"
VIDEO_TOO_LARGE = "VIDEO_TOO_LARGE"
VIDEO_TOO_LONG = "VIDEO_TOO_LONG"
NO_VIDEO_STREAM = "NO_VIDEO_STREAM"
TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
UNSUPPORTED_CODEC = "UNSUPPORTED_CODEC"
BAD_FRAME_RATE = "BAD_FRAME_RATE"


class Container(enum.Enum):
    """Containers pixmesh accepts (names match the proto enum added for videos)."""

    MP4 = "MP4"
    MOV = "MOV"
    M4V = "M4V"
    THREE_GP = "THREE_GP"
    MKV = "MKV"
    WEBM = "WEBM"
    AVI = "AVI"
    MPEG_TS = "MPEG_TS"

    @property
    def demuxer(self) -> str:
        """The one FFmpeg demuxer allowed to read it."""
        return _DEMUXER[self]

    @property
    def mime_type(self) -> str:
        return _MIME[self]

    @property
    def extension(self) -> str:
        return _EXTENSION[self]


_DEMUXER = {
    Container.MP4: "mov",
    Container.MOV: "mov",
    Container.M4V: "mov",
    Container.THREE_GP: "mov",
    Container.MKV: "matroska",
    Container.WEBM: "matroska",
    Container.AVI: "avi",
    Container.MPEG_TS: "mpegts",
}
_MIME = {
    Container.MP4: "video/mp4",
    Container.MOV: "video/quicktime",
    Container.M4V: "video/x-m4v",
    Container.THREE_GP: "video/3gpp",
    Container.MKV: "video/x-matroska",
    Container.WEBM: "video/webm",
    Container.AVI: "video/x-msvideo",
    Container.MPEG_TS: "video/mp2t",
}
_EXTENSION = {
    Container.MP4: "mp4",
    Container.MOV: "mov",
    Container.M4V: "m4v",
    Container.THREE_GP: "3gp",
    Container.MKV: "mkv",
    Container.WEBM: "webm",
    Container.AVI: "avi",
    Container.MPEG_TS: "ts",
}
# ISO-BMFF brands that are still images (imageprobe's AVIF/HEIF): never a video here, even
# though an AVIF sequence is technically one.
_STILL_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)
_QUICKTIME_BRANDS = frozenset({b"qt  "})
_M4V_BRANDS = frozenset({b"M4V ", b"M4VH", b"M4VP"})
# Top-level atoms an old QuickTime file (no `ftyp`) may start with.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_TS_PACKET = 188


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 2 * 1024**3
    max_duration_s: float = 4 * 3600.0
    # Per decoded frame (after the rotation; 8K UHD is 33.2 MP).
    max_pixels: int = 36_000_000
    # Every stream the container declares (video, audio, subtitles, data).
    max_streams: int = 16
    # A frame rate outside this range is a broken or hostile header (0 and 1e9 both occur).
    min_fps: float = 0.01
    max_fps: float = 1000.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")


def limits_of(settings: Any) -> VideoLimits:
    """The video limits of a service's settings (services/runtime/settings.py): the same at
    the gateway's upload and in the imaging worker; per frame at most max_pixels."""
    return VideoLimits(
        max_bytes=settings.max_video_bytes,
        max_duration_s=settings.max_video_duration_s,
        max_pixels=min(settings.max_pixels, VideoLimits.max_pixels),
        max_streams=settings.max_video_streams,
    )


@dataclass(frozen=True)
class VideoHeader:
    """What the container header says about its first video stream.

    `width`/`height` are as displayed, after the rotation flag (the display matrix);
    `rotation` is FFmpeg's: degrees counter-clockwise to turn the stored pixels to show them.
    """

    container: Container
    duration_s: float
    fps: float
    codec: str
    width: int
    height: int
    size_bytes: int
    # 0 when neither the container nor the stream says how many frames there are.
    frame_count: int = 0
    rotation: int = 0
    bit_rate: int = 0
    audio_codec: str = ""
    stream_count: int = 1
    # Container tags worth keeping (creation_time, location, make, model, ...), as FFmpeg names them.
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def mime_type(self) -> str:
        return self.container.mime_type

    @property
    def extension(self) -> str:
        return self.container.extension

    @property
    def stored_size(self) -> tuple[int, int]:
        if self.rotation % 180:
            return self.height, self.width
        return self.width, self.height

    def info(self) -> image_pb2.VideoInfo:
        """The header as the contract carries it (Image.video, VideoMetadata.info)."""
        return image_pb2.VideoInfo(
            container=image_pb2.VideoInfo.Container.Value(self.container.name),
            duration_s=self.duration_s,
            fps=self.fps,
            codec=self.codec,
            audio_codec=self.audio_codec,
            bit_rate=self.bit_rate,
            rotation=self.rotation,
            stream_count=self.stream_count,
        )


def sniff_video(data: bytes) -> Container | None:
    """The container announced by the magic bytes, or None when it is not a video we know."""
    head = data[:16]
    if head[4:8] == b"ftyp":
        return _sniff_bmff(data)
    if head[4:8] in _QUICKTIME_ATOMS and int.from_bytes(head[:4], "big") >= 8:
        return Container.MOV
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Container.WEBM if b"webm" in data[:64] else Container.MKV
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Container.AVI
    if _is_ts(data, 0, _TS_PACKET) or _is_ts(data, 4, _TS_PACKET + 4):
        return Container.MPEG_TS
    return None


def is_video(data: bytes) -> bool:
    """Whether the bytes are a video rather than an image: the image formats' magic bytes win
    (a GIF starts with 0x47, MPEG-TS's sync byte, and could pass for one)."""
    return sniff(data[:512]) is None and sniff_video(data[:1024]) is not None


def _sniff_bmff(data: bytes) -> Container | None:
    size = int.from_bytes(data[:4], "big")
    if size < 16:
        return None
    box = data[8 : min(size, 512)]
    major = box[0:4]
    brands = {major} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}
    if brands & _STILL_BRANDS:
        return None
    if major in _QUICKTIME_BRANDS:
        return Container.MOV
    if major in _M4V_BRANDS:
        return Container.M4V
    if major.startswith((b"3gp", b"3g2")):
        return Container.THREE_GP
    return Container.MP4


def _is_ts(data: bytes, first: int, stride: int) -> bool:
    # Three sync bytes a packet apart: one 0x47 alone is too common a first byte.
    needed = first + 2 * stride + 1
    return len(data) >= needed and all(data[first + i * stride] == 0x47 for i in range(3))


def open_input(
    source: str | IO[bytes], container: Container, max_streams: int = VideoLimits.max_streams
) -> av.container.InputContainer:
    """Open with the one demuxer `container` names, bounded stream-info probing.

    FFmpeg reads at most `probesize` bytes and `analyzeduration` microseconds of packets to fill
    in stream parameters the header lacks; bounded so a hostile file cannot make it read far.
    Its `max_streams` makes the demuxer stop allocating streams one past the limit (it then
    fails with ENOMEM, reported as TOO_MANY_STREAMS), so thousands of tracks cost nothing.
    """
    import av  # here, not at the top: the imaging worker's service process never opens a video

    if not isinstance(source, str):
        source.seek(0)  # a file read before (sniffed, probed) is read again from its start
    try:
        return av.open(
            source,
            mode="r",
            format=container.demuxer,
            options={
                "probesize": "5000000",
                "analyzeduration": "2000000",
                "max_streams": str(max_streams + 1),
                # For a URL string: FFmpeg's own HTTP client, which seeks with range requests; a
                # read that stalls this long (microseconds) fails instead of hanging the task.
                "rw_timeout": "30000000",
            },
            metadata_errors="replace",
        )
    except av.error.MemoryError as exc:
        raise _error(TOO_MANY_STREAMS, f"the video has more than {max_streams} streams") from exc


def probe_video(
    source: str | IO[bytes], limits: VideoLimits, *, head: bytes | None = None
) -> VideoHeader:
    """Check a video against the limits from its header; raise InvalidArgument if it fails.

    `source` is a path, a URL or a seekable binary file; `head` its first bytes when the caller
    has them already (the gateway does). A URL is read through a `RangeReader`.
    """
    if isinstance(source, str) and is_url(source):
        with RangeReader(source) as remote:
            return probe_video(cast(IO[bytes], remote), limits, head=head)
    header, media = open_video(source, limits, head=head)
    media.close()
    return header


def open_video(
    source: str | IO[bytes], limits: VideoLimits, *, head: bytes | None = None
) -> tuple[VideoHeader, av.container.InputContainer]:
    """`probe_video`, and the container it read the header from, left open for decoding (the
    caller closes it): a worker that goes on to seek opens the video once, not twice (each open
    reads the header and FFmpeg's stream-info probe again, by range requests for a URL).

    A URL given as a string is opened by FFmpeg's own HTTP client (open-ended GETs); the
    worker hands a `RangeReader` over it instead, which it closes after the container."""
    size = _size_of(source)
    if size == 0:
        raise _error(EMPTY_VIDEO, "the upload is empty")
    if size > limits.max_bytes:
        raise _error(VIDEO_TOO_LARGE, f"the video is {size} bytes; the limit is {limits.max_bytes}")
    if head is None:
        head = _read_head(source)
    container = sniff_video(head)
    if container is None:
        raise _error(UNSUPPORTED_FORMAT, "the data is not a video in a supported container")
    with _header_errors(container):
        media = open_input(source, container, limits.max_streams)
        try:
            return _header(media, container, source, size, limits), media
        except BaseException:
            media.close()
            raise


def _header(
    media: av.container.InputContainer,
    container: Container,
    source: str | IO[bytes],
    size: int,
    limits: VideoLimits,
) -> VideoHeader:
    import av

    streams = len(media.streams)
    if streams > limits.max_streams:
        raise _error(
            TOO_MANY_STREAMS,
            f"the video has {streams} streams; the limit is {limits.max_streams}",
        )
    if not media.streams.video:
        raise _error(NO_VIDEO_STREAM, "the file has no video stream")
    stream = media.streams.video[0]
    ctx = stream.codec_context
    if not ctx.name or ctx.width <= 0 or ctx.height <= 0:
        raise _error(VIDEO_CORRUPT, "the video stream declares no codec or an empty frame")
    try:
        av.codec.Codec(ctx.name, "r")
    except (ValueError, av.error.FFmpegError):
        raise _error(UNSUPPORTED_CODEC, f"no decoder for the {ctx.name} codec") from None
    if ctx.width * ctx.height > limits.max_pixels:
        raise _error(
            TOO_MANY_PIXELS,
            f"the frames are {ctx.width}x{ctx.height} pixels; the limit is "
            f"{limits.max_pixels} pixels",
        )
    duration = _duration_s(media, stream)
    if not duration > 0 or not math.isfinite(duration):
        raise _error(VIDEO_CORRUPT, "the video declares no duration")
    if duration > limits.max_duration_s:
        raise _error(
            VIDEO_TOO_LONG,
            f"the video lasts {duration:.0f} s; the limit is {limits.max_duration_s:.0f} s",
        )
    fps = _fps(stream)
    if not limits.min_fps <= fps <= limits.max_fps:
        raise _error(BAD_FRAME_RATE, f"the video declares a frame rate of {fps:g} frames/s")
    rotation = _rotation(media, container, source)
    width, height = (ctx.height, ctx.width) if rotation % 180 else (ctx.width, ctx.height)
    audio = media.streams.audio[0].codec_context.name if media.streams.audio else ""
    return VideoHeader(
        container=container,
        duration_s=duration,
        fps=fps,
        codec=ctx.name,
        width=width,
        height=height,
        size_bytes=size,
        frame_count=max(int(stream.frames or 0), 0),
        rotation=rotation,
        bit_rate=max(int(media.bit_rate or 0), 0),
        audio_codec=audio or "",
        stream_count=streams,
        tags={str(k): str(v) for k, v in (media.metadata or {}).items()},
    )


def _duration_s(media: av.container.InputContainer, stream: Any) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if media.duration is not None:
        return media.duration / 1_000_000  # AV_TIME_BASE
    return 0.0


def _fps(stream: Any) -> float:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _rotation(
    media: av.container.InputContainer, container: Container, source: str | IO[bytes]
) -> int:
    """FFmpeg's rotation of the first video track, from its `tkhd` matrix (ISO-BMFF only).

    PyAV exposes the display matrix on decoded frames, not on streams; reading it from the
    track header keeps the probe free of decoding. Other containers rarely carry one: 0.
    """
    if container.demuxer != "mov":
        return 0
    stream = media.streams.video[0]
    try:
        matrix = _tkhd_matrix(source, stream.id)
    except (OSError, ValueError, IndexError, struct.error):
        matrix = None
    if matrix is None:
        return 0
    a, b = matrix
    angle = round(math.degrees(math.atan2(b, a)))
    # FFmpeg's av_display_rotation_get() returns the counter-clockwise angle, i.e. minus this.
    return (-angle) % 360 // 90 * 90


def _tkhd_matrix(source: str | IO[bytes], track_id: int) -> tuple[float, float] | None:
    if isinstance(source, str):
        with RangeReader(source) if is_url(source) else open(source, "rb") as f:
            return _find_tkhd_matrix(cast(IO[bytes], f), track_id)
    here = source.tell()
    try:
        return _find_tkhd_matrix(source, track_id)
    finally:
        source.seek(here)


def _find_tkhd_matrix(f: IO[bytes], track_id: int) -> tuple[float, float] | None:
    """(a, b) of the `tkhd` matrix of track `track_id`, walking boxes without reading `mdat`."""
    for kind, start, end in _boxes(f, 0, f.seek(0, io.SEEK_END)):
        if kind != b"moov":
            continue
        for trak, t_start, t_end in _boxes(f, start, end):
            if trak != b"trak":
                continue
            for box, b_start, _ in _boxes(f, t_start, t_end):
                if box != b"tkhd":
                    continue
                f.seek(b_start)
                version = f.read(4)[0]
                ids = f.read(12 if version == 0 else 20)
                if struct.unpack(">I", ids[-4:])[0] != track_id:
                    break
                # After the ids: reserved, duration, reserved[2], layer, group, volume, reserved.
                f.seek(b_start + 4 + len(ids) + 4 + (4 if version == 0 else 8) + 16)
                a, b = struct.unpack(">ii", f.read(8))
                return a / 65536, b / 65536
    return None


def _boxes(f: IO[bytes], start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box between start and end."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def is_url(source: str | IO[bytes]) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def _size_of(source: str | IO[bytes]) -> int:
    if isinstance(source, str):
        if is_url(source):
            with RangeReader(source) as remote:
                return remote.size
        return os.path.getsize(source)
    here = source.tell()
    size = source.seek(0, io.SEEK_END)
    source.seek(here)
    return size


def _read_head(source: str | IO[bytes]) -> bytes:
    if isinstance(source, str):
        with RangeReader(source) if is_url(source) else open(source, "rb") as f:
            return f.read(512)
    here = source.tell()
    source.seek(0)
    head = source.read(512)
    source.seek(here)
    return head


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests (a presigned GET URL), for the probe's
    own small reads (magic bytes, box headers) and for FFmpeg, which the imaging worker and
    `probe_video` hand this file instead of the URL.

    FFmpeg's own HTTP client opens with a GET from byte 0 to the end and seeks with new
    open-ended GETs: whatever the server sent before each jump away is read from storage for
    nothing (3.1 MB on the open of a 10-minute 1080p MP4 whose `moov` is at its end, several MB
    per seek; SeaweedFS spent 0.48 s CPU serving a 10-minute poster job that way, 0.09 s this
    way: BENCHMARKS.md, Video, run 9). Here every request has an end:

    - the first block (`block` bytes; its answer gives the size) is held for the reader's life:
      the magic bytes, the first box headers and FFmpeg's first reads come from it;
    - a read of bytes not held fetches from where it starts: `block` bytes after a jump, twice
      the previous fetch (at most `max_block`) when it reads on from where that fetch ended, so
      a demuxer reading a GOP forward makes a few requests of growing size, and a jump away
      leaves at most the rest of one fetch unread.

    One persistent connection, opened again once when the server dropped it while idle.
    `requests` and `received` count what was fetched (tests, benchmarks)."""

    block = 64 * 1024
    max_block = 1024 * 1024

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url)
        factory = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._conn = factory(parts.netloc, timeout=timeout_s)
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._pos = 0
        self.requests = self.received = 0
        self._head, size = self._get(0, self.block - 1)
        self.size = int(size)
        # The last fetch (the head to begin with) and how many bytes it asked for.
        self._buf, self._buf_at, self._step = self._head, 0, self.block

    def _get(self, start: int, end: int) -> tuple[bytes, str]:
        try:
            resp, body = self._request(start, end)
        except ConnectionError:
            # A keep-alive connection the server closed while it was idle: once more on a new
            # one (a GET can be repeated); a second failure is the server's.
            self._conn.close()
            resp, body = self._request(start, end)
        self.requests += 1
        self.received += len(body)
        total = resp.getheader("Content-Range", "*/0").rsplit("/", 1)[-1]
        if resp.status == 416:
            return b"", total
        if resp.status != 206:
            raise OSError(f"range request answered {resp.status}")
        return body, total

    def _request(self, start: int, end: int) -> tuple[http.client.HTTPResponse, bytes]:
        try:
            self._conn.request("GET", self._path, headers={"Range": f"bytes={start}-{end}"})
            resp = self._conn.getresponse()
            return resp, resp.read()
        except ConnectionError:  # first: http.client's RemoteDisconnected is both kinds
            raise
        except http.client.HTTPException as exc:  # a malformed or cut answer: an I/O error
            self._conn.close()
            raise OSError(f"range request failed: {exc!r}") from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self.size if size < 0 else min(self.size, self._pos + size)
        parts: list[bytes] = []
        while self._pos < end:
            part = self._held(self._pos, end)
            if not part:
                self._fetch(self._pos, end)
                continue
            parts.append(part)
            self._pos += len(part)
        return b"".join(parts)

    def _held(self, start: int, end: int) -> bytes:
        for at, data in ((self._buf_at, self._buf), (0, self._head)):
            if at <= start < at + len(data):
                return data[start - at : end - at]
        return b""

    def _fetch(self, start: int, end: int) -> None:
        last_end = self._buf_at + len(self._buf)
        if last_end <= start < last_end + self._step:
            # Reading on from where the last fetch ended, or a little past it (a demuxer
            # skipping a packet of a stream it does not read).
            self._step = min(2 * self._step, self.max_block)
        elif start == len(self._head):  # reading on from the head (an MP4's first samples)
            self._step = min(2 * self.block, self.max_block)
        else:
            self._step = self.block
        stop = min(self.size, max(end, start + self._step))
        data, _ = self._get(start, stop - 1)
        if not data:
            raise OSError(f"range request for bytes {start}-{stop - 1} gave no data")
        self._buf, self._buf_at = data, start

    def close(self) -> None:
        self._conn.close()
        super().close()


@contextmanager
def _header_errors(container: Container) -> Iterator[None]:
    """Whatever FFmpeg raises on a bad header becomes a client-safe VIDEO_CORRUPT."""
    import av

    try:
        yield
    except InvalidArgument:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError, struct.error) as exc:
        raise _error(
            VIDEO_CORRUPT, f"the {container.name} header is unreadable or truncated"
        ) from exc


def _error(reason: str, message: str) -> InvalidArgument:
    return InvalidArgument(message=message, reason=reason)


# ---- video operations in jobs -----------------------------------------------------------------

VIDEO_OPERATIONS = frozenset({"video_frames", "video_sheet", "video_preview"})
DEFAULT_POSITIONS = 3  # VideoFrames without positions: 10 %, 50 %, 95 %


def video_operation(operations: Sequence[operations_pb2.Operation]) -> str | None:
    """The video operation a job starts with ("video_frames", ...), None for an image job."""
    if not operations:
        return None
    name = operations[0].WhichOneof("op")
    return name if name in VIDEO_OPERATIONS else None


def frame_count(op: operations_pb2.VideoFrames) -> int:
    return len(op.fractions) or len(op.timestamps_s) or DEFAULT_POSITIONS


def frame_renditions(
    op: operations_pb2.VideoFrames, renditions: Sequence[operations_pb2.Rendition]
) -> list[operations_pb2.Rendition]:
    """The outputs of a video_frames job, as renditions: frame-1, frame-2, ... each with no
    operations of its own, or with renditions frame-1-<name>, ... (the frames in order, each
    frame's renditions in their order). The gateway expands a job with this before it exists,
    and the imaging worker reads the frame of each output back from the same order."""
    if not renditions:
        return [operations_pb2.Rendition(name=f"frame-{i + 1}") for i in range(frame_count(op))]
    return [
        operations_pb2.Rendition(name=f"frame-{i + 1}-{r.name}", operations=r.operations)
        for i in range(frame_count(op))
        for r in renditions
    ]


def job_renditions(
    operations: Sequence[operations_pb2.Operation], renditions: Sequence[operations_pb2.Rendition]
) -> list[operations_pb2.Rendition]:
    """The renditions a job (or each job of a batch) runs: for a video_frames job its frames,
    each an output (frame_renditions: without them the worker made every frame and the job
    kept one); for any other job `renditions` as asked."""
    if video_operation(operations) == "video_frames":
        return frame_renditions(operations[0].video_frames, renditions)
    return list(renditions)


def check_video_job(
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
    kind: int,
) -> None:
    """Video operations come first, once, on a video; a video needs one of them first.

    `kind` is the source's Image.kind. Raises InvalidArgument naming the field at fault."""
    is_video = kind == image_pb2.Image.VIDEO
    first = video_operation(operations)
    if is_video and first is None:
        raise invalid(
            "operations[0]",
            "a video needs video_frames, video_sheet or video_preview as its first operation",
            "INVALID_OPERATION",
        )
    if not is_video and first is not None:
        raise invalid(
            f"operations[0].{first}",
            "applies to videos; this source is an image",
            "INVALID_OPERATION",
        )
    if first is not None:
        # Its proto rules: PlanPipeline plans only what follows it, so they are checked here.
        path = f"operations[0].{first}"
        found = rules.violations(getattr(operations[0], first), path)
        if found:
            raise InvalidArgument(
                message="; ".join(f"{v.field}: {v.description}" for v in found),
                reason="INVALID_OPERATION",
                violations=tuple(FieldViolation(v.field, v.description) for v in found),
            )
    later = [(f"operations[{i}]", op) for i, op in enumerate(operations) if i > 0] + [
        (f"renditions[{i}].operations[{j}]", op)
        for i, r in enumerate(renditions)
        for j, op in enumerate(r.operations)
    ]
    for where, op in later:
        name = op.WhichOneof("op")
        if name in VIDEO_OPERATIONS:
            raise invalid(
                f"{where}.{name}", "must be the job's first operation", "INVALID_OPERATION"
            )
    if first == "video_frames" and renditions:
        longest = max(len(r.name) for r in renditions)
        if longest > 64 - len(f"frame-{frame_count(operations[0].video_frames)}-"):
            raise invalid(
                "renditions",
                "with video_frames, rendition names get a frame-<n>- prefix and must stay "
                "within 64 characters",
                "BAD_RENDITION_NAME",
            )
