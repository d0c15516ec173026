"""Which service runs which operation, and how a pipeline splits into stages.

Operations not listed here belong to imaging, so a new imaging op needs no change in this file.
A stage is a run of consecutive operations owned by one service, so an image is not
round-tripped through object storage between two imaging ops. A job's renditions (imaging
operations only) hang off its last stage when that is an imaging stage, else off a new imaging
stage at the end: one imaging task decodes the image once and makes every rendition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from pixmesh import rules
from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import invalid
from services.runtime.imageprobe import Format

IMAGING = "imaging"
INFERENCE = "inference"
METADATA = "metadata"
WORKER_SERVICES = (IMAGING, INFERENCE, METADATA)

_OWNERS = {"extract_metadata": METADATA, "denoise": INFERENCE}

# The formats the inference service writes: its input's format when it is one of these, else
# PNG (GIF, BMP, ICO, HEIF, AVIF). The planner predicts a denoise stage's output from this, and
# services/inference/imageio.py must write the same (tests/services/runtime/test_pipeline.py).
INFERENCE_FORMATS = (image_pb2.JPEG, image_pb2.PNG, image_pb2.WEBP, image_pb2.TIFF)


def inference_output_format(source: Format) -> Format:
    """The format the inference service writes for an input of format `source`."""
    return source if source in INFERENCE_FORMATS else image_pb2.PNG


def service_of(name: str) -> str:
    """The service that runs the operation called `name` (the Operation oneof's field)."""
    return _OWNERS.get(name, IMAGING)


def op_name(op: operations_pb2.Operation, index: int = 0, prefix: str = "") -> str:
    name = op.WhichOneof("op")
    if name is None:
        # An op this build does not know arrives as an unknown field: never skip it silently.
        raise invalid(
            f"{prefix}operations[{index}]", "empty or unknown operation", "UNKNOWN_OPERATION"
        )
    return name


def owner(op: operations_pb2.Operation, index: int = 0, prefix: str = "") -> str:
    return service_of(op_name(op, index, prefix))


@dataclass
class PlannedStage:
    service: str
    operations: list[operations_pb2.Operation] = field(default_factory=list)
    renditions: list[operations_pb2.Rendition] = field(default_factory=list)


def plan_stages(
    ops: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition] = (),
) -> list[PlannedStage]:
    stages: list[PlannedStage] = []
    for i, op in enumerate(ops):
        svc = owner(op, i)
        if not stages or stages[-1].service != svc:
            stages.append(PlannedStage(svc))
        stages[-1].operations.append(op)
    if renditions:
        if not stages or stages[-1].service != IMAGING:
            stages.append(PlannedStage(IMAGING))
        stages[-1].renditions.extend(renditions)
    return stages


def check_renditions(renditions: Sequence[operations_pb2.Rendition], max_renditions: int) -> None:
    """Names well-formed and unique, at most `max_renditions`, imaging operations only.

    Raises InvalidArgument with the field at fault. Presets must be expanded first.
    """
    if len(renditions) > max_renditions:
        raise invalid(
            "renditions", f"at most {max_renditions} renditions per job", "TOO_MANY_RENDITIONS"
        )
    seen: set[str] = set()
    for i, rendition in enumerate(renditions):
        field_name = f"renditions[{i}]"
        if not rules.RENDITION_NAME.fullmatch(rendition.name):
            raise invalid(
                f"{field_name}.name",
                "1..64 characters of a-z, 0-9, '_' and '-'",
                "BAD_RENDITION_NAME",
            )
        if rendition.name in seen:
            raise invalid(
                f"{field_name}.name", f"{rendition.name!r} is used twice", "DUPLICATE_RENDITION"
            )
        seen.add(rendition.name)
        if rendition.preset:
            raise invalid(f"{field_name}.preset", "presets must be expanded first")
        for j, op in enumerate(rendition.operations):
            name = op_name(op, j, f"{field_name}.")
            if owner(op, j) != IMAGING:
                raise invalid(
                    f"{field_name}.operations[{j}]",
                    f"{name} cannot run in a rendition (imaging operations only); put it in the"
                    " job's operations, which run before every rendition",
                    "NOT_A_RENDITION_OPERATION",
                )


def request_hash(
    image: image_pb2.Image,
    ops: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition] = (),
    *,
    webhook_url: str = "",
) -> str:
    """Canonical hash of what a CreateJob asks for, to compare idempotent retries. A webhook's
    URL counts (its secret does not); without one the hash is what it always was."""
    h = hashlib.sha256(image.image_id.encode())
    for op in ops:
        h.update(b"\0")
        h.update(op.SerializeToString(deterministic=True))
    for rendition in renditions:
        h.update(b"\1")
        h.update(rendition.SerializeToString(deterministic=True))
    if webhook_url:
        h.update(b"\2")
        h.update(webhook_url.encode())
    return h.hexdigest()
