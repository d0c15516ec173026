"""Per-model statistics, after Triton's/KServe's model statistics extension.

Counts and cumulative durations for requests (a whole denoise), queueing (a tile waiting for
its batch) and compute (one batch through onnxruntime), latency histograms with fixed bucket
bounds, and a count per executed batch size. Updated from the event loop only.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# Seconds; the last bucket (above the last bound) is implicit.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass
class Histogram:
    bounds: tuple[float, ...] = LATENCY_BOUNDS
    counts: list[int] = field(default_factory=list)
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds


@dataclass
class BatchSizeStats:
    count: int = 0
    compute_seconds: float = 0.0


@dataclass
class ModelStats:
    requests_ok: int = 0
    requests_failed: int = 0
    inferences: int = 0  # tiles
    executions: int = 0  # batches
    failed_executions: int = 0
    last_inference_unix: float = 0.0
    request: Histogram = field(default_factory=Histogram)
    queue: Histogram = field(default_factory=Histogram)
    compute: Histogram = field(default_factory=Histogram)
    batch_sizes: dict[int, BatchSizeStats] = field(default_factory=dict)

    def record_batch(self, size: int, seconds: float, now_unix: float) -> None:
        self.executions += 1
        self.inferences += size
        self.compute.observe(seconds)
        entry = self.batch_sizes.setdefault(size, BatchSizeStats())
        entry.count += 1
        entry.compute_seconds += seconds
        self.last_inference_unix = now_unix

    def record_request(self, seconds: float, ok: bool) -> None:
        if ok:
            self.requests_ok += 1
            self.request.observe(seconds)
        else:
            self.requests_failed += 1
