"""What the workers can do, asked from each over gRPC and cached briefly.

ListOperations merges the answers; CreateJob uses them to reject an operation whose service
says it cannot run (e.g. Denoise while no model is loaded) with FAILED_PRECONDITION up front,
instead of queueing work that can only fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

from pixmesh.common.v1 import operations_pb2

log = logging.getLogger(__name__)

Fetch = Callable[[float], Awaitable[operations_pb2.Capabilities]]


class CapabilityCache:
    def __init__(self, sources: Mapping[str, Fetch], ttl_s: float, timeout_s: float = 2.0) -> None:
        self.sources = dict(sources)
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cached: tuple[float, list[operations_pb2.OperationInfo]] | None = None
        self._lock = asyncio.Lock()

    async def operations(self) -> Sequence[operations_pb2.OperationInfo]:
        async with self._lock:
            if self._cached and self._cached[0] > time.monotonic():
                return self._cached[1]
            results = await asyncio.gather(
                *(fetch(self.timeout_s) for fetch in self.sources.values()), return_exceptions=True
            )
            ops: list[operations_pb2.OperationInfo] = []
            complete = True
            for service, result in zip(self.sources, results, strict=True):
                if isinstance(result, BaseException):
                    complete = False
                    code = result.code().name if isinstance(result, grpc.RpcError) else "ERROR"
                    log.warning(
                        "capabilities unavailable", extra={"service": service, "code": code}
                    )
                    continue
                ops.extend(result.operations)
            # Do not cache a partial answer: a worker that is starting up is asked again.
            if complete:
                self._cached = (time.monotonic() + self.ttl_s, ops)
            return ops

    async def unavailable(self) -> dict[str, str]:
        """Op name -> reason, for ops a worker declared but cannot run now."""
        return {
            op.name: op.unavailable_reason or "unavailable"
            for op in await self.operations()
            if not op.available
        }
