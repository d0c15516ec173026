"""The imaging operations, one module each; registering an op is one line in `REGISTRY`.

gravity, overlay and base are shared helpers, not operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.imaging.ops import (
    adjust,
    blur,
    convert,
    crop,
    duotone,
    extend,
    flatten,
    flip,
    frames,
    grayscale,
    orient,
    pad,
    pixelate,
    redact,
    resize,
    rotate,
    round_corners,
    sharpen,
    tint,
    trim,
    video_frames,
    video_preview,
    video_sheet,
    watermark,
    watermark_text,
)
from services.imaging.ops.base import Context, OpSpec, Size

REGISTRY: Mapping[str, OpSpec[Any]] = {
    spec.name: spec
    for spec in (
        resize.SPEC,
        crop.SPEC,
        rotate.SPEC,
        flip.SPEC,
        orient.SPEC,
        trim.SPEC,
        pad.SPEC,
        extend.SPEC,
        frames.SPEC,
        blur.SPEC,
        sharpen.SPEC,
        pixelate.SPEC,
        adjust.SPEC,
        grayscale.SPEC,
        duotone.SPEC,
        tint.SPEC,
        flatten.SPEC,
        round_corners.SPEC,
        watermark.SPEC,
        watermark_text.SPEC,
        redact.SPEC,
        convert.SPEC,
        video_frames.SPEC,
        video_sheet.SPEC,
        video_preview.SPEC,
    )
}

__all__ = ["REGISTRY", "Context", "OpSpec", "Size"]
