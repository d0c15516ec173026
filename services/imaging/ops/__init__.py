"""The imaging operations, one module each; registering an op is one line in `REGISTRY`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.imaging.ops import convert, crop, flip, resize, rotate
from services.imaging.ops.base import Context, OpSpec, Size

REGISTRY: Mapping[str, OpSpec[Any]] = {
    spec.name: spec
    for spec in (
        resize.SPEC,
        crop.SPEC,
        rotate.SPEC,
        flip.SPEC,
        convert.SPEC,
    )
}

__all__ = ["REGISTRY", "Context", "OpSpec", "Size"]
