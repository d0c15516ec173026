"""The imaging service logic: run pipelines in isolated child processes, describe what it can do."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.encode import writable_formats
from services.imaging.isolation import ProcessPool
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.pipeline import PipelineResult, run
from services.imaging.plan import plan_pipeline
from services.runtime.imageprobe import Format, mime_for, readable_formats

_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class ChildRun:
    """What `run_in_child` sends back: the result, and when and where it ran (for the spans)."""

    result: PipelineResult
    started_ns: int  # time.time_ns() when the child began
    pid: int


def run_in_child(
    data: bytes,
    operations: Sequence[operations_pb2.Operation],
    limits: Limits,
    deadline: float | None,
    default_format: Format | None,
) -> ChildRun:
    """The pipeline, as run in a child process (module-level, so that it pickles by name)."""
    started = time.time_ns()
    result = run(data, operations, limits=limits, deadline=deadline, default_format=default_format)
    return ChildRun(result, started, os.getpid())


class ImagingProcessor:
    """Runs pipelines in `pool`'s child processes, off the event loop.

    The pool bounds the CPU work (one pipeline per child); the caller bounds how many tasks wait
    for it. The children record no spans: the pipeline span and one span per step are made here,
    from the timings the child returns.
    """

    def __init__(
        self, pool: ProcessPool, limits: Limits, *, default_format: Format | None = None
    ) -> None:
        self._pool = pool
        self.limits = limits
        self.default_format = default_format

    async def process(
        self,
        data: bytes,
        operations: Sequence[operations_pb2.Operation],
        deadline: float | None,
        *,
        default_format: Format | None = None,
    ) -> PipelineResult:
        """Run the pipeline; `deadline` is absolute, on the `time.monotonic()` clock."""
        with _tracer.start_as_current_span("imaging.pipeline") as span:
            span.set_attribute("pixmesh.operations", len(operations))
            child = await self._pool.run(
                run_in_child,
                data,
                list(operations),
                self.limits,
                deadline,
                default_format or self.default_format,
                deadline=deadline,
            )
            result = child.result
            _record_steps(child.started_ns, result.timings)
            span.set_attributes(
                {
                    "pixmesh.output.format": mime_for(result.format),
                    "pixmesh.output.width": result.width,
                    "pixmesh.output.height": result.height,
                    "pixmesh.output.bytes": len(result.data),
                    "pixmesh.flattened": result.flattened,
                    "pixmesh.child.pid": child.pid,
                }
            )
            return result

    def capabilities(self) -> operations_pb2.Capabilities:
        return capabilities(self.limits)

    def plan(
        self, image: image_pb2.Image, operations: Sequence[operations_pb2.Operation]
    ) -> operations_pb2.PipelinePlan:
        """Validate and predict a pipeline from header facts (cheap: no pixels, no pool)."""
        return plan_pipeline(image, operations, self.limits, self.default_format)


def _record_steps(started_ns: int, timings: Mapping[str, float]) -> None:
    """One child span per pipeline step, laid end to end from the child's start (the steps run
    back to back; what separates them is a few microseconds of bookkeeping)."""
    at = started_ns
    for name, seconds in timings.items():
        end = at + int(seconds * 1e9)
        _tracer.start_span(f"imaging.{name}", start_time=at).end(end_time=end)
        at = end


def capabilities(limits: Limits) -> operations_pb2.Capabilities:
    """ListOperations for imaging; other services add their own entries."""
    return operations_pb2.Capabilities(
        operations=[spec.info for spec in REGISTRY.values()],
        limits=limits.to_proto(),
        input_formats=readable_formats(),
        output_formats=writable_formats(),
    )
