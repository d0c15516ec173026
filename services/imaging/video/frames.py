"""Poster frames: the frames at positions of a video, EXACT or the best one near each (BEST_NEAR)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image

from services.imaging.video.decode import Video
from services.imaging.video.score import FrameScore, score_frame

DEFAULT_FRACTIONS = (0.10, 0.50, 0.95)
# BEST_NEAR looks this far either side of each position (capped at a quarter of the duration,
# so a short clip is not searched end to end), scoring at most MAX_CANDIDATES frames.
DEFAULT_WINDOW_S = 2.0
MAX_CANDIDATES = 24
NOTHING_ACCEPTABLE = (
    "no acceptable frame near this position (every candidate was black, flat or blurred): "
    "the exact frame is given"
)


class Select(enum.Enum):
    EXACT = "EXACT"
    BEST_NEAR = "BEST_NEAR"


@dataclass(frozen=True)
class PosterFrame:
    image: Image.Image
    # Where it was asked for and where the chosen frame is, seconds from the start.
    requested_s: float
    time_s: float
    score: FrameScore | None = None
    # Why the frame is not what was asked for (BEST_NEAR found nothing acceptable ...).
    warnings: tuple[str, ...] = field(default=())


def positions_s(
    video: Video, fractions: Sequence[float] = (), timestamps_s: Sequence[float] = ()
) -> list[float]:
    """Seconds of each asked position: timestamps as given (clamped), or fractions of the
    duration; DEFAULT_FRACTIONS when neither is given."""
    if timestamps_s:
        return [video.clamp(t) for t in timestamps_s]
    return [video.clamp(f * video.duration_s) for f in (fractions or DEFAULT_FRACTIONS)]


def extract(
    video: Video,
    positions: Sequence[float],
    select: Select = Select.EXACT,
    window_s: float = DEFAULT_WINDOW_S,
) -> list[PosterFrame]:
    """One frame per position, in the order asked; one seek per position."""
    if select is Select.EXACT:
        return [_exact(video, t) for t in positions]
    window = min(window_s, 0.25 * video.duration_s)
    return [_best_near(video, t, window) for t in positions]


def _exact(video: Video, t: float, warnings: tuple[str, ...] = ()) -> PosterFrame:
    frame = video.frame_at(t)
    return PosterFrame(frame.image, t, frame.time_s, warnings=warnings)


def _best_near(video: Video, t: float, window: float) -> PosterFrame:
    """The best acceptable frame within `window` of `t`; the EXACT frame with a warning when
    every candidate is black, flat or blurred. Scores within 10 % of the best count as equal,
    and then the frame nearest to `t` wins (a poster close to where it was asked for)."""
    start, end = video.clamp(t - window), video.clamp(t + window)
    # Every k-th frame of the window, so that at most MAX_CANDIDATES are scored.
    k = max(1, round((end - start) * video.header.fps / MAX_CANDIDATES))
    candidates: list[tuple[float, FrameScore]] = []
    for i, (when, frame) in enumerate(video.raw_frames_from(start, end)):
        if i % k == 0:
            score = score_frame(frame)
            if score.acceptable:
                candidates.append((when, score))
    if not candidates:
        return _exact(video, t, (NOTHING_ACCEPTABLE,))
    top = max(score.value for _, score in candidates)
    when, score = min(
        (c for c in candidates if c[1].value >= 0.9 * top), key=lambda c: abs(c[0] - t)
    )
    chosen = video.frame_at(when)
    return PosterFrame(chosen.image, t, chosen.time_s, score)
