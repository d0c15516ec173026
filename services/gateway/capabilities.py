"""What the workers can do, asked from each over gRPC and cached briefly.

ListOperations lists every operation of the contract, in the proto's order: as its service
describes it (the workers build their entries from the proto too, adding what only they know:
availability, loaded models), or, while that service does not answer, as the proto describes it
(pixmesh.rules), marked unavailable. CreateJob uses the workers' answers alone to reject an
operation whose service says it cannot run (e.g. Denoise while no model is loaded) with
FAILED_PRECONDITION up front, instead of queueing work that can only fail; a service that does
not answer is not taken for one that cannot run.

The answers are kept `ttl_s`; once that has passed, the next call is answered with them at once
while one refresh runs in the background (stale while revalidate), so a worker that hangs
without refusing (a stopped process: each ask waits `timeout_s`) never holds CreateJob or
ListOperations. A partial answer (a service did not answer) is kept only PARTIAL_TTL_S before
the next refresh, so a worker that is starting up is seen within about a second. Only the first
call, with nothing to answer from, and a call after `expire()` wait for the services.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from services.runtime.pipeline import owner

log = logging.getLogger(__name__)

Fetch = Callable[[float], Awaitable[operations_pb2.Capabilities]]

# How long a partial answer (a service did not answer) is kept before the services are asked
# again (in the background).
PARTIAL_TTL_S = 1.0


class CapabilityCache:
    def __init__(self, sources: Mapping[str, Fetch], ttl_s: float, timeout_s: float = 2.0) -> None:
        self.sources = dict(sources)
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cached: tuple[float, list[operations_pb2.OperationInfo]] | None = None
        self._silent: set[str] = set()  # the services that did not answer the last time
        self._fingerprints: dict[str, str] = {}  # Capabilities.plan_fingerprint by service
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None  # the background refresh in flight

    async def operations(self) -> list[operations_pb2.OperationInfo]:
        """Every operation of the contract (see the module's docstring)."""
        answered = {op.name: op for op in await self.answers()}
        out = []
        for name in rules.OPERATIONS:
            if name in answered:
                out.append(answered[name])
                continue
            op = operations_pb2.Operation()
            getattr(op, name).SetInParent()
            service = owner(op)
            info = rules.operation_info(name, service)
            info.available = False
            info.unavailable_reason = (
                f"the {service} service did not answer"
                if service in self._silent
                else f"the {service} service does not offer it"
            )
            out.append(info)
        return out

    async def answers(self) -> Sequence[operations_pb2.OperationInfo]:
        """The operations the workers described, as they answered (cached: see the module's
        docstring)."""
        cached = self._cached
        if cached is not None:
            if cached[0] <= time.monotonic() and (self._refresh is None or self._refresh.done()):
                self._refresh = asyncio.create_task(self._fetch())
            return cached[1]
        async with self._lock:
            if self._cached is None:  # nobody answered meanwhile
                await self._ask()
            assert self._cached is not None
            return self._cached[1]

    async def _fetch(self) -> None:
        async with self._lock:
            await self._ask()

    async def _ask(self) -> None:
        """Ask every service (under the lock) and keep what they answered."""
        results = await asyncio.gather(
            *(fetch(self.timeout_s) for fetch in self.sources.values()), return_exceptions=True
        )
        ops: list[operations_pb2.OperationInfo] = []
        silent: set[str] = set()
        fingerprints: dict[str, str] = {}
        for service, result in zip(self.sources, results, strict=True):
            if isinstance(result, BaseException):
                silent.add(service)
                code = result.code().name if isinstance(result, grpc.RpcError) else "ERROR"
                log.warning("capabilities unavailable", extra={"service": service, "code": code})
                continue
            ops.extend(result.operations)
            fingerprints[service] = result.plan_fingerprint
        self._silent, self._fingerprints = silent, fingerprints
        keep = min(self.ttl_s, PARTIAL_TTL_S) if silent else self.ttl_s
        self._cached = (time.monotonic() + keep, ops)

    async def plan_fingerprint(self, service: str) -> str:
        """What `service`'s plans depend on besides the request, as its last answer said
        (services/gateway/plans.py); "" when it did not answer or does not plan."""
        await self.answers()
        return self._fingerprints.get(service, "")

    def expire(self) -> None:
        """Ask the services again on the next call (an answer showed this one out of date)."""
        self._cached = None

    async def unavailable(self) -> dict[str, str]:
        """Op name -> reason, for ops a worker declared but cannot run now."""
        return {
            op.name: op.unavailable_reason or "unavailable"
            for op in await self.answers()
            if not op.available
        }
