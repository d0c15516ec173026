"""Which service runs which operation, and how a pipeline splits into stages.

Operations not listed here belong to imaging, so a new imaging op needs no change in this file.
A stage is a run of consecutive operations owned by one service, so an image is not
round-tripped through object storage between two imaging ops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import invalid

IMAGING = "imaging"
INFERENCE = "inference"
METADATA = "metadata"
WORKER_SERVICES = (IMAGING, INFERENCE, METADATA)

_OWNERS = {"extract_metadata": METADATA, "denoise": INFERENCE}


def op_name(op: operations_pb2.Operation, index: int = 0) -> str:
    name = op.WhichOneof("op")
    if name is None:
        # An op this build does not know arrives as an unknown field: never skip it silently.
        raise invalid(f"operations[{index}]", "empty or unknown operation", "UNKNOWN_OPERATION")
    return name


def owner(op: operations_pb2.Operation, index: int = 0) -> str:
    return _OWNERS.get(op_name(op, index), IMAGING)


@dataclass
class PlannedStage:
    service: str
    operations: list[operations_pb2.Operation] = field(default_factory=list)


def plan_stages(ops: Sequence[operations_pb2.Operation]) -> list[PlannedStage]:
    stages: list[PlannedStage] = []
    for i, op in enumerate(ops):
        svc = owner(op, i)
        if not stages or stages[-1].service != svc:
            stages.append(PlannedStage(svc))
        stages[-1].operations.append(op)
    return stages


def request_hash(image: image_pb2.Image, ops: Sequence[operations_pb2.Operation]) -> str:
    """Canonical hash of what a CreateJob asks for, to compare idempotent retries."""
    h = hashlib.sha256(image.image_id.encode())
    for op in ops:
        h.update(b"\0")
        h.update(op.SerializeToString(deterministic=True))
    return h.hexdigest()
