"""PlanPipeline: validate a job's pipeline against an image's header facts and predict its output.

The gateway sends the header it recorded at upload (format, displayed size, frames, EXIF
orientation), so nothing is downloaded or decoded; the checks are exactly the ones the worker runs
(`validate_job`). The orientation matters to a pipeline that starts with `orient {mode:
IGNORE}`: it works on the stored pixels, which for orientations 5..8 are height x width. Images
recorded before the gateway kept the orientation have 0, read as 1 (upright): their plan then
assumes the displayed size, and the worker, which reads the real header, has the last word.

The cost is a deliberately simple linear model, documented here and in the README: milliseconds
per megapixel for decoding the source, for each operation (on the larger of its input and output)
and for encoding, per format. The constants are rough figures for one core of a 2-core machine
(bench/imaging.py gives the real ones for a deployment); inference ops are priced separately
because DnCNN on CPU costs two orders of magnitude more than a resize.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pixmesh
import services.imaging
import services.runtime
from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.encode import WEBP_EFFORT, writable_formats
from services.imaging.limits import Limits
from services.imaging.ops import Size
from services.imaging.validation import (
    Plan,
    PlannedOp,
    animation_frames,
    head,
    outputs_of,
    validate_job,
)
from services.imaging.video.plan import plan_video
from services.runtime.errors import invalid
from services.runtime.imageprobe import Format, ImageFormat, ImageHeader, readable_formats
from services.runtime.pipeline import IMAGING, INFERENCE, owner
from services.runtime.video import check_video_job

DECODE_MS_PER_MP = 12.0
OP_MS_PER_MP = 6.0
INFERENCE_MS_PER_MP = 800.0  # DnCNN-S with tiling on CPU; far less on a GPU
ENCODE_MS_PER_MP: dict[Format, float] = {
    ImageFormat.JPEG: 8.0,
    ImageFormat.PNG: 30.0,
    ImageFormat.WEBP: 40.0,
    ImageFormat.AVIF: 120.0,
    ImageFormat.GIF: 25.0,
    ImageFormat.TIFF: 5.0,
}
DEFAULT_ENCODE_MS_PER_MP = 30.0
# The WebP figure above is for effort (libwebp method) 4; other efforts scale it by their encode
# time relative to 4, measured on 800x600 q80 encodes of the bench's photos (bench/imaging.py
# `webp_methods`; BENCHMARKS.md "Imaging": 0..6 took 15.8, 20.9, 27.4, 59.8, 59.9, 65.9 and
# 118.2 ms, 6 and 5 in a later run where 4 took 59.1 ms). Lossless WebP is priced alike.
WEBP_EFFORT_COST = {0: 0.26, 1: 0.35, 2: 0.46, 3: 1.0, 4: 1.0, 5: 1.15, 6: 2.0}


# The code a plan comes from: the imaging package (ops, validation, this module), the shared
# runtime (pipeline rules, probing, video checks) and the SDK's generated stubs and rules. A
# deployment of any other version of them may plan differently.
_PLANNING_CODE = (
    Path(services.imaging.__file__).parent,
    Path(services.runtime.__file__).parent,
    Path(pixmesh.__file__).parent,
)


@functools.cache
def _code_digest() -> bytes:
    digest = hashlib.sha256()
    for root in _PLANNING_CODE:
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root.parent)).encode())
            digest.update(path.read_bytes())
    return digest.digest()


def plan_fingerprint(
    limits: Limits, default_format: Format | None, webp_effort: int, video: object = None
) -> str:
    """Capabilities.plan_fingerprint: a digest of everything `plan_pipeline` answers from besides
    its request: the limits, the default output format, the WebP effort that prices encodes, the
    formats this build reads and writes, the video limits (`video`, as given to the service) and
    the planning code itself. The gateway reuses a plan only under the fingerprint it was made
    with, so a worker started with other settings or code is asked again (services/gateway/plans.py).
    The code is read once per process (~150 small files, ~15 ms)."""
    facts = repr(
        (
            limits,
            default_format,
            webp_effort,
            video,
            sorted(readable_formats()),
            sorted(writable_formats()),
        )
    )
    return hashlib.sha256(_code_digest() + facts.encode()).hexdigest()[:32]


def header_of(image: image_pb2.Image) -> ImageHeader:
    """The header facts the gateway recorded at upload (width and height as displayed, and the
    EXIF orientation: 0, unknown, is read as 1)."""
    if image.format == image_pb2.IMAGE_FORMAT_UNSPECIFIED or not image.width or not image.height:
        raise invalid("image", "format, width and height are required")
    if image.orientation > 8:
        raise invalid("image.orientation", "must be 0 (unknown) or an EXIF orientation, 1..8")
    return ImageHeader(
        format=image.format,
        width=image.width,
        height=image.height,
        frame_count=max(image.frame_count, 1),
        size_bytes=image.size_bytes,
        orientation=image.orientation or 1,
    )


def plan_pipeline(
    image: image_pb2.Image,
    operations: Sequence[operations_pb2.Operation],
    limits: Limits,
    default_format: Format | None = None,
    *,
    renditions: Sequence[operations_pb2.Rendition] = (),
    webp_effort: int = WEBP_EFFORT,
) -> operations_pb2.PipelinePlan:
    """Raise InvalidArgument (with the field at fault) unless the pipeline can run on `image`.

    `webp_effort` is the WebP effort of a Convert that sets none (the worker's default): it
    prices the encode.

    The top level describes the result of `operations` (the size, format and frames the
    renditions start from; a plain job's output) and `estimated_cost` covers the whole job: the
    source decoded once, `operations` once, every output's own operations and encoding. Each of
    `renditions` is checked as the pipeline `operations` + its own (see `validate_job`) and
    planned in `renditions`: its operations, output and cost, from the result of `operations` on.
    """
    check_video_job(operations, renditions, image.kind)  # video ops first, on videos only
    if image.kind == image_pb2.Image.VIDEO:
        return plan_video(
            plan_pipeline, image, operations, renditions, limits.max_frames, default_format,
            limits=limits, webp_effort=webp_effort,
        )  # fmt: skip
    for i, op in enumerate(operations):
        _check_resolved(op, f"operations[{i}]", image.format)
    for i, rendition in enumerate(renditions):
        for j, op in enumerate(rendition.operations):
            _check_resolved(op, f"renditions[{i}].operations[{j}]", image.format)
    header = header_of(image)
    plans = validate_job(
        operations,
        renditions,
        header,
        limits,
        allow_other_services=True,
        default_format=default_format,
    )
    shared = len(operations)
    # A plain job's one (unnamed) output is the result of its operations: the top level.
    common = head(plans[0], shared, header, default_format)
    start = _Work.start(header)
    start.add(operations, common.operations)
    planned = []
    total = start.cost
    for rendition, plan in zip(outputs_of(renditions), plans, strict=True):
        work = _Work(start.size, start.frames)
        work.add(rendition.operations, plan.operations[shared:])
        work.encode(plan, webp_effort)
        total = total + work.cost
        if rendition.name:
            planned.append(
                operations_pb2.RenditionPlan(
                    name=rendition.name,
                    plan=_pipeline_plan(rendition.operations, plan, work.cost.proto(), shared),
                )
            )
    result = _pipeline_plan(operations, common, total.proto())
    result.renditions.extend(planned)
    return result


def _check_resolved(op: operations_pb2.Operation, path: str, source: Format) -> None:
    if op.WhichOneof("op") == "convert" and op.convert.auto and source in writable_formats():
        # The gateway resolves it from the client's Accept header; it leaves it only for an input
        # pixmesh cannot write, whose output format imaging's one rule decides (choose_format).
        raise invalid(f"{path}.convert.auto", "must be resolved before planning")


def _pipeline_plan(
    operations: Sequence[operations_pb2.Operation],
    plan: Plan,
    cost: operations_pb2.PipelineCost,
    first: int = 0,
) -> operations_pb2.PipelinePlan:
    """`plan`'s prediction for `operations`, which are its steps from index `first` on."""
    out = plan.output_size
    return operations_pb2.PipelinePlan(
        operations=[
            operations_pb2.PlannedOperation(
                operation=op,
                service=owner(op, step.index),
                width=step.size.width if step.size else 0,
                height=step.size.height if step.size else 0,
            )
            for op, step in zip(operations, plan.operations[first:], strict=True)
        ],
        output_width=out.width if out else 0,
        output_height=out.height if out else 0,
        output_format=plan.output_format or image_pb2.IMAGE_FORMAT_UNSPECIFIED,
        output_frames=plan.output_frames,
        estimated_cost=cost,
    )


@dataclass(frozen=True)
class _Cost:
    decoded: float = 0.0  # megapixels
    processed: float = 0.0  # megapixels
    cpu: float = 0.0  # ms

    def __add__(self, other: _Cost) -> _Cost:
        return _Cost(
            self.decoded + other.decoded,
            self.processed + other.processed,
            self.cpu + other.cpu,
        )

    def proto(self) -> operations_pb2.PipelineCost:
        return operations_pb2.PipelineCost(
            decoded_megapixels=round(self.decoded, 3),
            processed_megapixels=round(self.processed, 3),
            cpu_ms=max(1, round(self.cpu)),
        )


class _Work:
    """The cost model, step by step: `size` and `frames` are those of the image so far."""

    def __init__(self, size: Size | None, frames: int) -> None:
        self.size = size
        self.frames = frames
        self.cost = _Cost()

    @classmethod
    def start(cls, header: ImageHeader) -> _Work:
        """Decoding the source."""
        work = cls(Size(header.width, header.height), animation_frames(header))
        decoded = header.width * header.height * work.frames / 1e6
        work.cost = _Cost(decoded=decoded, cpu=DECODE_MS_PER_MP * decoded)
        return work

    def add(
        self, operations: Sequence[operations_pb2.Operation], steps: Sequence[PlannedOp]
    ) -> None:
        """Each operation, on the larger of its input and output."""
        for op, step in zip(operations, steps, strict=True):
            size = self.size
            after = step.size or size  # unknown (after a trim): assume the size is kept
            if step.name == "orient":
                # Free: the decision is taken at decoding, which is priced already; with IGNORE
                # the pixels are the stored ones (transposed for orientations 5..8).
                self.size = after
                continue
            if size is None or after is None:
                continue
            mp = max(size.width * size.height, after.width * after.height) * self.frames / 1e6
            service = owner(op, step.index)
            if service == IMAGING:
                self.cost += _Cost(processed=mp, cpu=OP_MS_PER_MP * mp)
            elif service == INFERENCE:
                self.cost += _Cost(processed=mp, cpu=INFERENCE_MS_PER_MP * mp)
            self.size = after
            # Animations: a `frames` op changes how many frames the later steps touch.
            self.frames = step.frames or self.frames

    def encode(self, plan: Plan, webp_effort: int) -> None:
        """Encoding the output of `plan` (a WebP at its Convert's effort, else `webp_effort`)."""
        if self.size is None:
            return
        fmt = plan.output_format
        per_mp = (
            DEFAULT_ENCODE_MS_PER_MP
            if fmt is None
            else ENCODE_MS_PER_MP.get(fmt, DEFAULT_ENCODE_MS_PER_MP)
        )
        if fmt == ImageFormat.WEBP:
            options = plan.options
            effort = options.effort if options.HasField("effort") else webp_effort
            per_mp *= WEBP_EFFORT_COST[effort]
        mp = self.size.width * self.size.height * plan.output_frames / 1e6
        self.cost += _Cost(cpu=per_mp * mp)
