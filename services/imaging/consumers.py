"""Thin JetStream handler: an imaging task in, its outputs (the image, or one per rendition) out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pixmesh.common.v1 import operations_pb2
from pixmesh.events.v1 import events_pb2
from services.imaging.pipeline import PipelineResult
from services.imaging.resolve import PIPELINE_VERSION, resolved_operations, resolver
from services.imaging.service import ImagingProcessor, Source
from services.runtime.provenance import KEY_SCHEME, engine_fingerprint
from services.runtime.worker import (
    ImageResult,
    Processor,
    Resolver,
    StageResult,
    monotonic_deadline,
    output_operations,
)


def processor(imaging: ImagingProcessor, presign: Callable[[str], str] | None = None) -> Processor:
    """With `presign` (an object key -> a GET URL) the pipeline child reads the input itself
    (service.Source) and `data` is not used: the worker is told not to read it
    (TaskWorker reads_input)."""

    async def process(task: events_pb2.Task, data: bytes) -> StageResult:
        deadline = monotonic_deadline(task)
        effort = imaging.webp_effort
        facts = xmp_facts(task)
        source: bytes | Source = Source(presign(task.input_key)) if presign else data
        results = await imaging.process(
            source, task.operations, deadline, renditions=task.renditions, provenance=facts
        )
        outputs = [
            (name, image_result(r, output_operations(task, i), effort))
            for i, (name, r) in enumerate(results.renditions)
        ]
        # How a video operation ran (VideoOutputs; image pipelines report nothing).
        reports = list(getattr(results, "reports", ()))
        if task.renditions:
            return StageResult(renditions=outputs, reports=reports)
        # A plain job's one unnamed output: the stage's image on the wire.
        return StageResult(image=outputs[0][1], reports=reports)

    return process


def xmp_facts(task: events_pb2.Task) -> dict[str, str]:
    """What Convert.provenance embeds besides the operations (services/imaging/xmp.py): facts
    the output key stands for, so that the bytes stay the same for the same work."""
    facts = {
        "sourceSha256": task.source.sha256,
        "inputKey": task.input_key,
        "keyScheme": KEY_SCHEME,
        "pipelineVersion": PIPELINE_VERSION,
    }
    facts.update({f"engine.{k}": v for k, v in engine_fingerprint().items()})
    return facts


def resolve(imaging: ImagingProcessor) -> Resolver:
    """The imaging worker's Resolver (services/imaging/resolve.py), with its defaults."""
    return resolver(imaging.webp_effort, imaging.default_format)


def image_result(
    r: PipelineResult, operations: Sequence[operations_pb2.Operation], webp_effort: int
) -> ImageResult:
    return ImageResult(
        data=r.data,
        format=r.format,
        content_type=r.content_type,
        extension=r.extension,
        width=r.width,
        height=r.height,
        operations=resolved_operations(operations, r.format, webp_effort),
    )
