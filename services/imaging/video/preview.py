"""A short animated preview: frames from `start` for `duration`, at a frame rate and a width."""

from __future__ import annotations

from dataclasses import dataclass

import av
from PIL import Image

from services.imaging.video.decode import Video, to_image
from services.imaging.video.plan import frame_count as frame_count  # re-exported


@dataclass(frozen=True)
class Preview:
    frames: list[Image.Image]
    # Milliseconds each frame shows; they add up to the asked duration (within rounding).
    durations_ms: list[int]


def preview_size(video: Video, width: int) -> tuple[int, int]:
    w = min(width, video.header.width) if width else video.header.width
    return w, max(1, round(video.header.height * w / video.header.width))


def preview(video: Video, start_s: float, duration_s: float, fps: float, width: int) -> Preview:
    """One seek to `start_s`, then decode forward and keep the frame shown at each tick of
    1/fps (the last frame at or before the tick). The span is cut at the end of the video;
    the caller checks the frame count against the animation limit first (`frame_count`)."""
    start = video.clamp(start_s)
    end = video.clamp(start + duration_s)
    ticks = [start + i / fps for i in range(frame_count(end - start, fps))]
    size = preview_size(video, width)
    chosen: list[av.VideoFrame] = []
    shown: av.VideoFrame | None = None
    for when, frame in video.raw_frames_from(start, end):
        while len(chosen) < len(ticks) and when > ticks[len(chosen)] + 1e-6:
            chosen.append(shown or frame)  # what was on screen at that tick
        if len(chosen) == len(ticks):
            break
        shown = frame
    if shown is not None:
        chosen.extend([shown] * (len(ticks) - len(chosen)))
    images: dict[int, Image.Image] = {}  # a frame held for several ticks is converted once
    frames = []
    for frame in chosen:
        if id(frame) not in images:
            images[id(frame)] = to_image(frame).resize(
                size, Image.Resampling.LANCZOS, reducing_gap=3.0
            )
        frames.append(images[id(frame)])
    step = round(1000 / fps)
    return Preview(frames, [step] * len(frames))
