"""Imaging's plans, reused: a bounded cache in front of the PlanPipeline call.

A plan is a pure function of the request (the image's header facts, the operations, the
renditions) and of what imaging says its plans depend on besides it: `plan_fingerprint` in its
ListOperations answer (its limits and defaults, the planning code; services/imaging/plan.py) and
in every PlanPipeline answer. A plan is kept under the fingerprint it was made with and reused
only while imaging's capabilities, which the gateway refreshes every `cache_ttl_s`, name that same
fingerprint; an answer made under another fingerprint than the one the capabilities name makes
the gateway ask for them again at once. So a worker restarted with other settings or code is
asked again; in the moments before the gateway hears of it a job may be accepted on the old plan,
and the worker, which runs the same checks itself, fails it with the same reason (as when imaging
cannot plan at all). Refusals are not kept: an invalid request always reaches imaging, and its
answer names the field at fault.

The key leaves out what names an image but does not describe it (id, sha256, file name, creation
time), so images of the same format, size and orientation share plans; every other field of the
image (and any added later) is part of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from cachetools import LRUCache
from opentelemetry import trace

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.imaging.v1 import imaging_pb2

# Imaging's PlanPipeline: the plan and the fingerprint it was made under.
RemotePlanner = Callable[
    [
        image_pb2.Image,
        Sequence[operations_pb2.Operation],
        Sequence[operations_pb2.Rendition],
        float,
    ],
    Awaitable[tuple[operations_pb2.PipelinePlan, str]],
]
# Imaging's fingerprint as its capabilities (cached) name it now; "" when unknown.
CurrentFingerprint = Callable[[], Awaitable[str]]

# A plan and its key are each well under a kilobyte: a few MB at most, and far more distinct
# pipelines x image shapes than a deployment sends within minutes.
CACHE_SIZE = 4096


def plan_key(
    image: image_pb2.Image,
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
) -> bytes:
    """The request as imaging would receive it, serialised deterministically, without the
    image's fields that identify it but change nothing any pipeline does to it."""
    shape = image_pb2.Image()
    shape.CopyFrom(image)
    shape.ClearField("image_id")
    shape.ClearField("sha256")
    shape.ClearField("filename")
    shape.ClearField("created_at")
    request = imaging_pb2.PlanPipelineRequest(
        image=shape, operations=operations, renditions=renditions
    )
    return request.SerializeToString(deterministic=True)


class PlanCache:
    """A Planner (services/gateway/jobs.py) that asks `planner` only for plans it does not
    hold under imaging's current fingerprint. `stale` is called when an answer shows that the
    fingerprint the capabilities name is out of date (it should refresh them)."""

    def __init__(
        self,
        planner: RemotePlanner,
        fingerprint: CurrentFingerprint,
        stale: Callable[[], None],
        maxsize: int = CACHE_SIZE,
    ) -> None:
        self.planner = planner
        self.fingerprint = fingerprint
        self.stale = stale
        self._plans: LRUCache[tuple[str, bytes], operations_pb2.PipelinePlan] = LRUCache(maxsize)

    async def __call__(
        self,
        image: image_pb2.Image,
        operations: Sequence[operations_pb2.Operation],
        renditions: Sequence[operations_pb2.Rendition],
        timeout: float,
    ) -> operations_pb2.PipelinePlan:
        current = await self.fingerprint()
        key = plan_key(image, operations, renditions)
        cached = self._plans.get((current, key)) if current else None
        trace.get_current_span().set_attribute("pixmesh.plan_reused", cached is not None)
        if cached is not None:
            return _copy(cached)
        plan, made_under = await self.planner(image, operations, renditions, timeout)
        if made_under:
            self._plans[(made_under, key)] = _copy(plan)
            if made_under != current:
                self.stale()
        return plan

    def __len__(self) -> int:
        return len(self._plans)


def _copy(plan: operations_pb2.PipelinePlan) -> operations_pb2.PipelinePlan:
    # Messages are mutable: what the cache holds is never the caller's object.
    out = operations_pb2.PipelinePlan()
    out.CopyFrom(plan)
    return out
