"""A job on a video, in the imaging child: the video operation makes stills (or an animation),
then each goes through the image pipeline with the job's other operations and renditions.

    probe → video.<op> (seek, decode forward, pick) → per still: pipeline.run(…)

A still reaches `pipeline.run` as the decoded image itself (`pipeline.Decoded`, no encoded
intermediate and no copy of its pixels), a preview's frames as a lossless in-memory APNG, so
everything an image job does — validation, operations, renditions, encoding, metadata
stripping — is the same code, and a frame is an image like any upload. The
output names of video_frames come from `services.runtime.video.frame_renditions`, the same
function the gateway expanded the job with.

`source` is the video's bytes, a path, or a presigned GET URL that FFmpeg reads through a
`RangeReader` (bounded range requests on one connection): only the header and the GOPs around
each position are fetched, so the worker never holds a long video in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, cast

from PIL import Image

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from services.imaging.encode import WEBP_EFFORT
from services.imaging.errors import TOO_MANY_FRAMES
from services.imaging.limits import Limits
from services.imaging.ops import video_preview, video_sheet
from services.imaging.pipeline import Decoded, PipelineResult
from services.imaging.pipeline import run as run_image
from services.imaging.video import heap
from services.imaging.video.decode import Video
from services.imaging.video.frames import DEFAULT_WINDOW_S, PosterFrame, Select, extract
from services.imaging.video.frames import positions_s as frame_positions
from services.imaging.video.outputs import VideoOutputs
from services.imaging.video.plan import frame_count
from services.imaging.video.preview import preview
from services.imaging.video.sheet import contact_sheet
from services.runtime.errors import InvalidArgument
from services.runtime.imageprobe import Format, ImageHeader
from services.runtime.video import (
    RangeReader,
    VideoLimits,
    frame_renditions,
    is_url,
    video_operation,
)

ImageFormat = image_pb2.ImageFormat
_SELECT = {
    operations_pb2.VideoFrames.SELECT_UNSPECIFIED: Select.EXACT,
    operations_pb2.VideoFrames.EXACT: Select.EXACT,
    operations_pb2.VideoFrames.BEST_NEAR: Select.BEST_NEAR,
}


def run(
    source: bytes | str,
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition] = (),
    *,
    limits: Limits,
    deadline: float | None = None,
    default_format: Format | None = None,
    webp_effort: int = WEBP_EFFORT,
    provenance: Mapping[str, str] | None = None,
    video_limits: VideoLimits | None = None,
) -> VideoOutputs:
    """Run a video job (`operations[0]` is video_frames, video_sheet or video_preview).

    For video_frames, `renditions` are the expanded outputs (frame_renditions); none given
    means the job's default frame-N outputs. Raises InvalidArgument for a bad video or
    operations, DeadlineExceeded when the deadline passes while decoding or between steps.
    It runs with the video settings of malloc, and whatever it freed goes back to the OS when
    it ends (heap.video_job): the child does not keep a 4K job's heap while it waits for the
    next task.
    """
    with heap.video_job():
        return _run(
            source,
            operations,
            renditions,
            limits=limits,
            deadline=deadline,
            default_format=default_format,
            webp_effort=webp_effort,
            provenance=provenance,
            video_limits=video_limits,
        )


def _run(
    source: bytes | str,
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
    *,
    limits: Limits,
    deadline: float | None,
    default_format: Format | None,
    webp_effort: int,
    provenance: Mapping[str, str] | None,
    video_limits: VideoLimits | None,
) -> VideoOutputs:
    name = video_operation(operations)
    if name is None:
        raise ValueError("not a video job")
    op = operations[0]
    images = _Images(
        list(operations[1:]), limits, deadline, default_format, webp_effort, provenance
    )
    timings: dict[str, float] = {}
    began = time.perf_counter()
    media = _media(source)
    reports: tuple[job_pb2.OperationReport, ...] = ()
    with (
        _closing(media),
        Video(media, video_limits or _video_limits(limits), deadline=deadline) as video,
    ):
        timings["probe"] = time.perf_counter() - began
        began = time.perf_counter()
        if name == "video_frames":
            positions = _positions(video, op.video_frames)
            expanded = list(renditions) or frame_renditions(op.video_frames, ())
            per_frame, extra = divmod(len(expanded), len(positions))
            if extra or not per_frame:
                raise ValueError(f"{len(expanded)} outputs for {len(positions)} frames")
            outputs: list[tuple[str, PipelineResult]] = []
            frames: list[PosterFrame] = []
            decoding = 0.0
            # One position at a time, its outputs made before the next is decoded: memory
            # holds one frame (a 4K RGB frame is 25 MB), whatever the number of positions.
            for i, t in enumerate(positions):
                began = time.perf_counter()
                (frame,) = extract(video, [t], *_selection(video, op.video_frames))
                decoding += time.perf_counter() - began
                mine = expanded[i * per_frame : (i + 1) * per_frame]
                outputs += images.still(frame.image, mine)
                frames.append(dataclasses.replace(frame, image=_NO_IMAGE))
            timings[name] = decoding
            reports = (_report(frames),)
        elif name == "video_sheet":
            sheet = _sheet(video, op.video_sheet)
            timings[name] = time.perf_counter() - began
            outputs = images.still(sheet, renditions)
        else:
            data = _preview(video, op.video_preview, limits)
            timings[name] = time.perf_counter() - began
            outputs = images.animation(data, renditions)
    return VideoOutputs(tuple(outputs), timings, reports)


@dataclass(frozen=True)
class _Images:
    """The image pipeline the stills go through: the job's operations after the video one."""

    operations: list[operations_pb2.Operation]
    limits: Limits
    deadline: float | None
    default_format: Format | None
    webp_effort: int
    provenance: Mapping[str, str] | None

    def still(
        self, image: Image.Image, renditions: Sequence[operations_pb2.Rendition]
    ) -> list[tuple[str, PipelineResult]]:
        # The pixels as they are, described as the lossless still they stand for (what an
        # uncompressed TIFF of them would probe as): no encoded copy (25 MB at 4K), no decoded
        # one, no copy by the strip step (which copies only a decoded file).
        width, height = image.size
        header = ImageHeader(ImageFormat.TIFF, width, height, 1, width * height * 3)
        still = Decoded(header, image)
        return self._run(still, renditions, self.default_format or ImageFormat.JPEG)

    def animation(
        self, data: bytes, renditions: Sequence[operations_pb2.Rendition]
    ) -> list[tuple[str, PipelineResult]]:
        animated = (ImageFormat.WEBP, ImageFormat.GIF, ImageFormat.AVIF)
        fmt = self.default_format if self.default_format in animated else ImageFormat.WEBP
        return self._run(data, renditions, fmt)

    def _run(
        self,
        data: bytes | Decoded,
        renditions: Sequence[operations_pb2.Rendition],
        fmt: Format | None,
    ) -> list[tuple[str, PipelineResult]]:
        # The byte limit is for uploads: the intermediate is uncompressed (a 4K still is 25 MB),
        # and its pixels were checked against max_pixels by the video probe.
        size = data.header.size_bytes if isinstance(data, Decoded) else len(data)
        limits = dataclasses.replace(
            self.limits, max_input_bytes=max(self.limits.max_input_bytes, size)
        )
        result = run_image(
            data,
            self.operations,
            renditions,
            limits=limits,
            deadline=self.deadline,
            default_format=fmt,
            webp_effort=self.webp_effort,
            provenance=self.provenance,
        )
        # The source format of the outputs is the video, not the intermediate.
        unspecified = ImageFormat.IMAGE_FORMAT_UNSPECIFIED
        return [
            (n, dataclasses.replace(r, source_format=unspecified)) for n, r in result.renditions
        ]


def _media(source: bytes | str) -> str | IO[bytes]:
    """What `Video` opens: bytes as a file; a presigned URL as a `RangeReader`, every request
    with an end (FFmpeg's own HTTP client sends open-ended GETs, and what the storage server
    sent before each seek away was read for nothing: BENCHMARKS.md, Video, run 9); a path as
    it is."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if is_url(source):
        return cast(IO[bytes], RangeReader(source))
    return source


def _closing(media: str | IO[bytes]) -> contextlib.AbstractContextManager[object]:
    """Closes what `_media` opened, after the container that reads it."""
    return contextlib.nullcontext() if isinstance(media, str) else contextlib.closing(media)


def _video_limits(limits: Limits) -> VideoLimits:
    """The default video limits, with the per-frame pixel limit of the images'."""
    return dataclasses.replace(VideoLimits(), max_pixels=min(limits.max_pixels, 36_000_000))


def _positions(video: Video, op: operations_pb2.VideoFrames) -> list[float]:
    return frame_positions(video, list(op.fractions), list(op.timestamps_s))


def _selection(video: Video, op: operations_pb2.VideoFrames) -> tuple[Select, float]:
    return _SELECT[op.select], op.window_s or DEFAULT_WINDOW_S


# What a report keeps of a frame once its outputs are made (the pixels are let go).
_NO_IMAGE = Image.new("RGB", (1, 1))


def _sheet(video: Video, op: operations_pb2.VideoSheet) -> Image.Image:
    colour = op.background or "#000000"
    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return contact_sheet(
        video,
        video_sheet.count(op),
        columns=op.columns,
        tile_width=op.tile_width or video_sheet.DEFAULT_TILE_WIDTH,
        gap=op.gap,
        background=(rgb[0], rgb[1], rgb[2]),
    )


def _preview(video: Video, op: operations_pb2.VideoPreview, limits: Limits) -> bytes:
    seconds, fps = video_preview.duration_s(op), video_preview.fps(op)
    count = frame_count(min(seconds, max(video.duration_s - op.start_s, 0.0)), fps)
    if count > limits.max_frames:
        raise InvalidArgument(
            message=(
                f"video_preview: {count} frames ({seconds:g} s at {fps:g} frames/s); the limit "
                f"is {limits.max_frames}"
            ),
            reason=TOO_MANY_FRAMES,
        )
    result = preview(video, op.start_s, seconds, fps, video_preview.width(op))
    buf = io.BytesIO()
    first, *others = result.frames
    if others:  # an APNG: a lossless animation the image pipeline decodes frame by frame
        first.save(
            buf,
            format="PNG",
            save_all=True,
            append_images=others,
            duration=result.durations_ms,
            loop=0,
            compress_level=1,
        )
    else:
        first.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _report(frames: Sequence[PosterFrame]) -> job_pb2.OperationReport:
    report = job_pb2.VideoFramesReport()
    for frame in frames:
        entry = report.frames.add(requested_s=frame.requested_s, time_s=frame.time_s)
        if frame.score is not None:
            entry.score = frame.score.value
        entry.warnings.extend(frame.warnings)
    return job_pb2.OperationReport(index=0, video_frames=report)
