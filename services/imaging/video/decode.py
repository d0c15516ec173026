"""Open a video and get the frame shown at a time, by seeking to a keyframe and decoding forward."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO

import av
import av.container
import av.video.stream
from PIL import Image

from services.runtime.errors import DeadlineExceeded, InvalidArgument
from services.runtime.video import (
    VIDEO_CORRUPT,
    VideoHeader,
    VideoLimits,
    open_video,
)

DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
# The keyframes are so far apart that reaching a position means decoding more frames than this
# from the last keyframe before it (a hostile or badly muxed file): refused, not ground through.
KEYFRAMES_TOO_SPARSE = "KEYFRAMES_TOO_SPARSE"
DEFAULT_MAX_DECODED_PER_SEEK = 1800
MAX_THREADS = 2
# 1080p and less decode with MAX_THREADS frame threads; larger frames with one: at 4K the child
# peaks ~30 MiB lower (271 vs 300 MiB), which keeps the whole imaging worker under 400 MB, and
# decodes on one core instead of two (BENCHMARKS.md, Video, third pass).
THREADED_MAX_PIXELS = 1920 * 1088
_ROTATE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class DecodedFrame:
    image: Image.Image
    # Presentation time of the frame, seconds from the start of the video.
    time_s: float


class Video:
    """An open video: its checked header and its first video stream, positioned by `frame_at`.

    `deadline` is absolute on the `time.monotonic()` clock; it is checked between frames.
    """

    def __init__(
        self,
        source: str | IO[bytes],
        limits: VideoLimits,
        *,
        deadline: float | None = None,
        max_decoded_per_seek: int = DEFAULT_MAX_DECODED_PER_SEEK,
        threads: int = 0,
    ) -> None:
        # One open: the container the header was read from is the one decoded.
        self.header: VideoHeader
        self._media: av.container.InputContainer
        self.header, self._media = open_video(source, limits)
        self.deadline = deadline
        self.max_decoded_per_seek = max_decoded_per_seek
        self.decoded = 0  # frames decoded so far, for tests and benchmarks
        self.seeks = 0
        self.stream: av.video.stream.VideoStream = self._media.streams.video[0]
        # Frame threads, as the ffmpeg command line decodes; each thread holds frames of its
        # own (a 4K frame is 12 MB), so at most MAX_THREADS (measured on 2 cores: a third
        # thread saved no time and cost 80 MB at 4K), and one for frames larger than
        # THREADED_MAX_PIXELS, whose memory counts more than their speed. 0: that many.
        self.stream.thread_type = "AUTO"
        self.stream.codec_context.thread_count = threads or decoder_threads(self.header)
        base = self.stream.time_base
        self._time_base: Fraction = base if base else Fraction(1, av.time_base)
        self._start = self.stream.start_time or 0
        self._last: av.VideoFrame | None = None

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._media.close()

    @property
    def duration_s(self) -> float:
        return self.header.duration_s

    def clamp(self, t: float) -> float:
        return min(max(t, 0.0), self.duration_s)

    def frame_at(self, t: float) -> DecodedFrame:
        """The frame shown at `t` seconds: the first whose timestamp is at or after `t` (what
        `ffmpeg -ss t -i ...` gives), or the last frame when `t` is past it."""
        for frame in self.frames_from(self.clamp(t)):
            return frame
        raise _corrupt()

    def frames_from(self, t: float, *, until: float | None = None) -> Iterator[DecodedFrame]:
        """Frames from the one shown at `t` on, in order, up to `until` seconds (None: the
        first only is guaranteed cheap; keep iterating to decode forward)."""
        target = self._start + int(t / self._time_base)
        for pts, frame in self._decode_from(target):
            when = float((pts - self._start) * self._time_base)
            if until is not None and when > until:
                return
            yield DecodedFrame(to_image(frame), when)

    def raw_frames_from(self, t: float, until: float) -> Iterator[tuple[float, av.VideoFrame]]:
        """Like `frames_from` but the decoder's frames (not converted), for cheap scoring."""
        target = self._start + int(t / self._time_base)
        for pts, frame in self._decode_from(target):
            when = float((pts - self._start) * self._time_base)
            if when > until:
                return
            yield when, frame

    def _decode_from(self, target: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Seek to the keyframe at or before `target` (stream time base) and decode forward,
        yielding the frame shown at `target` and everything after it.

        Demuxers without an index (MPEG-TS) seek by bytes, and may land past the keyframe
        before `target`: the decoder's first frame is then the next keyframe, after `target`
        (a GOP late), or there is none (near the end). So the first frame is checked, and the
        seek goes back further (1 s, then twice as far each time) until it is at or before
        `target`, or the seek asks for a time before the first frame. Indexed containers land
        right the first time."""
        back = 0
        while True:
            decoded = self._seek(target - back)
            first = next(decoded, None)
            at_start = target - back < self._start  # a time before the first frame's
            if first is not None and (first[0] <= target or at_start):
                break
            decoded.close()
            if at_start:
                return  # nothing decodable at all (callers refuse the video)
            back = 2 * back if back else max(1, int(1 / self._time_base))
        yield from self._forward(target, itertools.chain([first], decoded))

    def _seek(self, target: int) -> Generator[tuple[int, av.VideoFrame]]:
        self.seeks += 1
        try:
            self._media.seek(target, stream=self.stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            # Unseekable (no index, a truncated file): decode from the start, still capped.
            self._media.seek(0, stream=self.stream, backward=True, any_frame=True)
        return self._decoded()

    def _forward(
        self, target: int, decoded: Iterator[tuple[int, av.VideoFrame]]
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        skipped = 0
        previous: tuple[int, av.VideoFrame] | None = None
        reached = False
        for pts, frame in decoded:
            if reached:
                yield pts, frame
                continue
            if pts < target:
                skipped += 1
                if skipped > self.max_decoded_per_seek:
                    raise InvalidArgument(
                        message=(
                            f"reaching {float(target * self._time_base):.2f} s means decoding more "
                            f"than {self.max_decoded_per_seek} frames from the keyframe before it"
                        ),
                        reason=KEYFRAMES_TOO_SPARSE,
                    )
                previous = pts, frame
                continue
            reached = True
            yield pts, frame
        if not reached and previous is not None:
            # Past the last frame: the last one is what a player shows, unless the data ends
            # well before the position (a truncated file whose header promised more).
            gap = float((target - previous[0]) * self._time_base)
            if gap > 2 / self.header.fps + 0.1:
                raise InvalidArgument(
                    message="the video's data ends before its declared duration (truncated)",
                    reason=VIDEO_CORRUPT,
                )
            yield previous

    def _decoded(self) -> Generator[tuple[int, av.VideoFrame]]:
        try:
            for packet in self._media.demux(self.stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    self.decoded += 1
                    self._check_deadline()
                    yield frame.pts, frame
        except av.error.EOFError:
            return
        except av.error.FFmpegError as exc:
            if self.decoded == 0:
                raise _corrupt() from exc
            # A broken packet after good ones (a truncated tail): keep what was decoded.
            return

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded(
                message="the deadline passed while the video was being decoded",
                reason=DEADLINE_EXCEEDED,
            )


def decoder_threads(header: VideoHeader) -> int:
    """Frame threads for decoding this video (see THREADED_MAX_PIXELS)."""
    if header.width * header.height > THREADED_MAX_PIXELS:
        return 1
    return min(MAX_THREADS, os.cpu_count() or 1)


def to_image(frame: av.VideoFrame) -> Image.Image:
    """The frame as an RGB image, turned as its rotation flag says. FFmpeg converts it to
    packed RGB (one frame-sized buffer) and Pillow copies that once into its own layout;
    PyAV's `to_image` makes two more full-size copies on the way (a bytearray, then bytes):
    four frame-sized buffers at its peak (~100 MB for a 4K frame) against two (58 MB) here."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    if plane.line_size > 0:
        size = (plane.width, plane.height)
        # Any buffer works; Pillow's stub names fewer types.
        image = Image.frombuffer("RGB", size, plane, "raw", "RGB", plane.line_size, 1)  # type: ignore[arg-type]
    else:  # bottom-up rows: PyAV's own copy handles them
        image = rgb.to_image()  # type: ignore[no-untyped-call]
    del rgb, plane
    turn = _ROTATE.get(int(frame.rotation or 0) % 360)
    return image.transpose(turn) if turn is not None else image


def _corrupt() -> InvalidArgument:
    return InvalidArgument(message="the video has no decodable frame", reason=VIDEO_CORRUPT)
