"""The imaging operations, one module each; registering an op is one line in `_MODULES`.

gravity, overlay and base are shared helpers, not operations.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from services.imaging.ops.base import Context, OpSpec, Size

# The registry: one line per operation, the name of its module here (which defines SPEC), in
# ListOperations' order. A module that fails to import or has no OpSpec SPEC fails the import of
# this package, so a mistake shows at start-up and in every test, never as a missing operation.
_MODULES = (
    "resize",
    "crop",
    "rotate",
    "flip",
    "orient",
    "trim",
    "pad",
    "extend",
    "frames",
    "blur",
    "sharpen",
    "pixelate",
    "adjust",
    "grayscale",
    "duotone",
    "tint",
    "flatten",
    "round_corners",
    "watermark",
    "watermark_text",
    "redact",
    "convert",
    "video_frames",
    "video_sheet",
    "video_preview",
)


def _spec(module: str) -> OpSpec[Any]:
    spec = importlib.import_module(f"{__name__}.{module}").SPEC
    if not isinstance(spec, OpSpec):
        raise TypeError(f"services/imaging/ops/{module}.py: SPEC is not an OpSpec")
    return spec


REGISTRY: Mapping[str, OpSpec[Any]] = {spec.name: spec for spec in map(_spec, _MODULES)}
if len(REGISTRY) != len(_MODULES):
    raise RuntimeError("two imaging op modules register the same operation name")

__all__ = ["REGISTRY", "Context", "OpSpec", "Size"]
