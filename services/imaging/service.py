"""The imaging service logic: run pipelines in isolated child processes, describe what it can do."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry import trace

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.encode import WEBP_EFFORT, writable_formats
from services.imaging.isolation import ProcessPool
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.pipeline import Outputs, output_attributes, run
from services.imaging.plan import plan_fingerprint, plan_pipeline
from services.runtime import metrics
from services.runtime.errors import NotFound, Unavailable
from services.runtime.imageprobe import Format, extension_for, readable_formats
from services.runtime.video import VideoLimits, video_operation

_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class Source:
    """An input the child reads itself: a presigned GET URL of the object. Its bytes then go
    from object storage straight into the child, instead of through the service process and a
    pickled pipe transfer (2 MB for a 12 MP JPEG)."""

    url: str
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ChildRun:
    """What a child sends back: the result, and when and where it ran (for the spans)."""

    result: Outputs
    started_ns: int  # time.time_ns() when the child began
    pid: int
    fetch_s: float = 0.0  # reading a Source, before the pipeline


def video_run(*args: Any, **kwargs: Any) -> Outputs:
    """services.imaging.video.run.run, imported where it runs: in the children, whose
    forkserver preloads it (forkserver_init), so that PyAV stays out of the service process."""
    from services.imaging.video.run import run as run_video

    return run_video(*args, **kwargs)


def in_child(work: Callable[[bytes | str], Outputs], source: bytes | str | Source) -> ChildRun:
    """`work(data)` as run in a child process, timed, `data` read from `source` first when it
    is a Source. Module-level, so that it pickles by name; `work` is a functools.partial of a
    module-level pipeline function, which pickles too."""
    started = time.time_ns()
    fetch_s = 0.0
    if isinstance(source, Source):
        began = time.perf_counter()
        source = read_source(source)
        fetch_s = time.perf_counter() - began
    return ChildRun(work(source), started, os.getpid(), fetch_s)


def read_source(source: Source) -> bytes:
    """The object's bytes (a plain HTTP GET of a presigned URL: no S3 client in the child)."""
    try:
        with urllib.request.urlopen(source.url, timeout=source.timeout_s) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND") from None
        raise Unavailable(message="object storage error", reason="STORAGE_ERROR") from None
    except (OSError, TimeoutError):
        raise Unavailable(message="object storage unreachable", reason="STORAGE_ERROR") from None


class ImagingProcessor:
    """Runs pipelines in `pool`'s child processes, off the event loop.

    The pool bounds the CPU work (one pipeline per child); the caller bounds how many tasks wait
    for it. The children record no spans: the pipeline span and one event per step are made
    here, from the timings the child returns. `webp_effort` is the WebP encoder effort of a Convert
    that sets none (the PIXMESH_WEBP_EFFORT setting).
    """

    def __init__(
        self,
        pool: ProcessPool,
        limits: Limits,
        *,
        default_format: Format | None = None,
        webp_effort: int = WEBP_EFFORT,
        video_limits: VideoLimits | None = None,
    ) -> None:
        self._pool = pool
        self.limits = limits
        self.video_limits = video_limits
        self.default_format = default_format
        self.webp_effort = webp_effort
        # What this worker's plans depend on besides the request (Capabilities.plan_fingerprint).
        self.plan_fingerprint = plan_fingerprint(limits, default_format, webp_effort, video_limits)

    async def process(
        self,
        data: bytes | str | Source,
        operations: Sequence[operations_pb2.Operation],
        deadline: float | None,
        *,
        renditions: Sequence[operations_pb2.Rendition] = (),
        default_format: Format | None = None,
        provenance: Mapping[str, str] | None = None,
    ) -> Outputs:
        """Decode `data` once, run `operations`, then make every output from their result (each
        rendition, or a plain job's one unnamed output; see `pipeline.run`), all in one child.
        `deadline` is absolute, on the `time.monotonic()` clock. The steps before the outputs
        branch off are events of the pipeline span, and so are a plain job's own; each rendition
        has a span with its own."""
        with _tracer.start_as_current_span("imaging.pipeline") as span:
            span.set_attribute("pixmesh.operations", len(operations))
            if renditions:
                span.set_attribute("pixmesh.renditions", len(renditions))
            # A video job: its own runner, which reads a presigned URL with range requests
            # itself (never the whole video into memory).
            video = video_operation(operations) is not None
            if video and isinstance(data, Source):
                data = data.url
            runner: Callable[..., Outputs] = (
                partial(video_run, video_limits=self.video_limits) if video else run
            )
            work = partial(
                runner,
                operations=list(operations),
                renditions=list(renditions),
                limits=self.limits,
                deadline=deadline,
                default_format=default_format or self.default_format,
                webp_effort=self.webp_effort,
                provenance=provenance,
            )
            child: ChildRun = await self._pool.run(in_child, work, data, deadline=deadline)
            at = _record_fetch(span, child)
            result = child.result
            at = _record_steps(span, at, result.shared_timings)
            for name, output in result.renditions:
                if not name:
                    at = _record_steps(span, at, output.timings)
                    span.set_attributes(output_attributes(output))
                    continue
                rendition = _tracer.start_span("imaging.rendition", start_time=at)
                rendition.set_attribute("pixmesh.rendition", name)
                rendition.set_attributes(output_attributes(output))
                at = _record_steps(rendition, at, output.timings)
                rendition.end(end_time=at)
            metrics.imaging_steps(
                result.timings,
                extension_for(result.renditions[0][1].source_format),
                [
                    (f"{name}." if name else "", extension_for(out.format))
                    for name, out in result.renditions
                ],
            )
            span.set_attribute("pixmesh.child.pid", child.pid)
            return result

    def capabilities(self) -> operations_pb2.Capabilities:
        caps = capabilities(self.limits, self.video_limits)
        caps.plan_fingerprint = self.plan_fingerprint
        return caps

    def plan(
        self,
        image: image_pb2.Image,
        operations: Sequence[operations_pb2.Operation],
        renditions: Sequence[operations_pb2.Rendition] = (),
    ) -> operations_pb2.PipelinePlan:
        """Validate and predict a pipeline from header facts (cheap: no pixels, no pool)."""
        return plan_pipeline(
            image,
            operations,
            self.limits,
            self.default_format,
            renditions=renditions,
            webp_effort=self.webp_effort,
        )


def _record_fetch(span: trace.Span, child: ChildRun) -> int:
    """An event for the child's read of its input, when it read one. Returns when it ended."""
    if not child.fetch_s:
        return child.started_ns
    _event(span, "imaging.fetch", child.started_ns, child.fetch_s)
    return child.started_ns + int(child.fetch_s * 1e9)


def _record_steps(span: trace.Span, started_ns: int, timings: Mapping[str, float]) -> int:
    """One event of `span` per pipeline step, at the step's start, with its duration; the steps
    are laid end to end from `started_ns` (they run back to back; what separates them is a few
    microseconds of bookkeeping). Returns when the last one ends. Events, not spans: the same
    timeline in Tempo, and a cheap job's eleven steps were a third of its spans."""
    at = started_ns
    for name, seconds in timings.items():
        _event(span, f"imaging.{name}", at, seconds)
        at += int(seconds * 1e9)
    return at


def _event(span: trace.Span, name: str, at_ns: int, seconds: float) -> None:
    span.add_event(name, {"pixmesh.duration_ms": round(seconds * 1e3, 3)}, timestamp=at_ns)


def capabilities(
    limits: Limits, video_limits: VideoLimits | None = None
) -> operations_pb2.Capabilities:
    """ListOperations for imaging; other services add their own entries. The video limits are
    the ones `video_run` enforces (its defaults when none were given)."""
    return operations_pb2.Capabilities(
        operations=[spec.info for spec in REGISTRY.values()],
        limits=limits.to_proto(video_limits or VideoLimits()),
        input_formats=readable_formats(),
        output_formats=writable_formats(),
    )
