"""Lanes of the task queues (issue 12): interactive work and batches.

A batch's tasks go to `pixmesh.task.<service>.batch`, pulled by a durable of their own (the
Consumer's `lanes`), so that a worker keeps capacity for interactive tasks while a batch fills
the rest: the imaging pool has a slot that batch tasks never take, and runs batch tasks in
processes of a lower CPU priority (services/imaging/isolation.py).
Kept apart from bus.py so that the imaging children, which read LANE's value through the pool,
do not import the NATS client.
"""

from __future__ import annotations

from contextvars import ContextVar

INTERACTIVE = ""
BATCH_LANE = "batch"

# The lane of the task being handled, set by the Consumer's pull loop of that lane and copied into
# each handler task (and whatever it awaits).
LANE: ContextVar[str] = ContextVar("pixmesh_lane", default=INTERACTIVE)


def in_batch_lane() -> bool:
    return LANE.get() == BATCH_LANE
