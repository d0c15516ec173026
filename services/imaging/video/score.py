"""How worth looking at a frame is: black, flat and blurred frames are told apart by measurement.

Measured on a small grey copy (swscale shrinks it in the decoder's own pixel format, cheaply):
- brightness: mean luma; below `BLACK_MEAN` the frame is black (fades, slates, lens caps);
- contrast: standard deviation of luma; below `FLAT_STD` the frame is flat (one colour, fades);
- entropy: Shannon entropy of the luma histogram in bits (0..8): how much there is to see;
- sharpness: variance of the Laplacian (the classic focus measure), on the same small copy, so
  that it does not depend on the video's resolution; below `BLURRED_SHARPNESS` it is blurred.
The score that ranks acceptable frames is entropy x log(1 + sharpness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

SAMPLE_WIDTH = 192
BLACK_MEAN = 20.0
FLAT_STD = 8.0
BLURRED_SHARPNESS = 12.0


@dataclass(frozen=True)
class FrameScore:
    mean: float
    std: float
    entropy: float
    sharpness: float

    @property
    def black(self) -> bool:
        return self.mean < BLACK_MEAN

    @property
    def flat(self) -> bool:
        return self.std < FLAT_STD

    @property
    def blurred(self) -> bool:
        return self.sharpness < BLURRED_SHARPNESS

    @property
    def acceptable(self) -> bool:
        return not (self.black or self.flat or self.blurred)

    @property
    def value(self) -> float:
        return self.entropy * math.log1p(self.sharpness)

    def defects(self) -> list[str]:
        return [name for name in ("black", "flat", "blurred") if getattr(self, name)]


def score_frame(frame: av.VideoFrame) -> FrameScore:
    width = min(SAMPLE_WIDTH, frame.width)
    height = max(2, round(frame.height * width / frame.width))
    grey = frame.reformat(width=width, height=height, format="gray").to_ndarray()
    return score_luma(np.asarray(grey, dtype=np.uint8))


def score_luma(grey: npt.NDArray[np.uint8]) -> FrameScore:
    luma = grey.astype(np.float32)
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = histogram[histogram > 0] / histogram.sum()
    entropy = float(-(p * np.log2(p)).sum())
    laplacian = (
        luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    )
    sharpness = float(laplacian.var()) if laplacian.size else 0.0
    return FrameScore(float(luma.mean()), float(luma.std()), entropy, sharpness)
