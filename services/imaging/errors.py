"""Reasons (ErrorInfo.reason) the imaging service uses, in one place for clients and tests.

Probe reasons (EMPTY_IMAGE, UNSUPPORTED_FORMAT, IMAGE_CORRUPT, IMAGE_TOO_LARGE, TOO_MANY_PIXELS,
TOO_MANY_FRAMES) are defined by `services.runtime.imageprobe` and re-exported here.
"""

from __future__ import annotations

from services.runtime.imageprobe import (
    EMPTY_IMAGE,
    IMAGE_CORRUPT,
    IMAGE_TOO_LARGE,
    TOO_MANY_FRAMES,
    TOO_MANY_PIXELS,
    UNSUPPORTED_FORMAT,
)

# An operation with no field set: empty, or added to the contract after this build.
UNKNOWN_OPERATION = "UNKNOWN_OPERATION"
# A known operation that another service runs (denoise, extract_metadata).
UNSUPPORTED_OPERATION = "UNSUPPORTED_OPERATION"
# A parameter out of range or inconsistent (crop outside the image, bad colour, ...).
INVALID_OPERATION = "INVALID_OPERATION"
TOO_MANY_OPERATIONS = "TOO_MANY_OPERATIONS"
# A step would produce an image wider or taller than max_output_dimension.
OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
# The image is animated and the operation or output format cannot keep it so (pick frames, or
# convert to a format that animates).
ANIMATION_UNSUPPORTED = "ANIMATION_UNSUPPORTED"
# Convert.max_bytes cannot be met even at the lowest quality.
MAX_BYTES_UNREACHABLE = "MAX_BYTES_UNREACHABLE"
# The process running the pipeline died (a decoder crash, the OOM killer): retried, and the
# task's final error once it is out of deliveries.
WORKER_CRASHED = "WORKER_CRASHED"

__all__ = [
    "ANIMATION_UNSUPPORTED",
    "DEADLINE_EXCEEDED",
    "EMPTY_IMAGE",
    "IMAGE_CORRUPT",
    "IMAGE_TOO_LARGE",
    "INVALID_OPERATION",
    "MAX_BYTES_UNREACHABLE",
    "OUTPUT_TOO_LARGE",
    "TOO_MANY_FRAMES",
    "TOO_MANY_OPERATIONS",
    "TOO_MANY_PIXELS",
    "UNKNOWN_OPERATION",
    "UNSUPPORTED_FORMAT",
    "UNSUPPORTED_OPERATION",
    "WORKER_CRASHED",
]
