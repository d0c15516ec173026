"""The imaging service logic: run pipelines on a bounded executor, describe what it can do."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Sequence
from concurrent.futures import Executor

from pixmesh.common.v1 import operations_pb2
from services.imaging.encode import writable_formats
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.pipeline import PipelineResult, run
from services.runtime.imageprobe import Format, readable_formats


class ImagingProcessor:
    """Runs pipelines off the event loop.

    `executor` bounds the CPU work (Pillow releases the GIL while decoding, resampling and
    encoding, so threads use every core); the caller bounds how many tasks wait for it.
    """

    def __init__(
        self, executor: Executor, limits: Limits, *, default_format: Format | None = None
    ) -> None:
        self._executor = executor
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
        call = functools.partial(
            run,
            data,
            list(operations),
            limits=self.limits,
            deadline=deadline,
            default_format=default_format or self.default_format,
        )
        # run_in_executor does not carry context variables: copy them so the pipeline's spans
        # join the caller's trace.
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, context.run, call)

    def capabilities(self) -> operations_pb2.Capabilities:
        return capabilities(self.limits)


def capabilities(limits: Limits) -> operations_pb2.Capabilities:
    """ListOperations for imaging; other services add their own entries."""
    return operations_pb2.Capabilities(
        operations=[spec.info for spec in REGISTRY.values()],
        limits=limits.to_proto(),
        input_formats=readable_formats(),
        output_formats=writable_formats(),
    )
