"""PlanPipeline: the exact validation and the predicted output, from header facts only."""

import asyncio

import pytest

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import (
    Convert,
    Crop,
    Denoise,
    ExtractMetadata,
    Frames,
    Resize,
    Trim,
)
from pixmesh.imaging.v1.imaging_pb2 import ListOperationsRequest, PlanPipelineRequest
from services.imaging.api import ImagingApi
from services.imaging.limits import Limits
from services.imaging.plan import (
    DECODE_MS_PER_MP,
    ENCODE_MS_PER_MP,
    INFERENCE_MS_PER_MP,
    OP_MS_PER_MP,
    plan_fingerprint,
    plan_pipeline,
)
from services.imaging.service import ImagingProcessor
from services.runtime.errors import InvalidArgument
from services.runtime.video import VideoLimits

from .samples import ops

LIMITS = Limits(max_output_dimension=2000, max_operations=6)
PHOTO = image_pb2.Image(image_id="img_1", format=image_pb2.JPEG, width=4000, height=3000)
GIF = image_pb2.Image(image_id="img_2", format=image_pb2.GIF, width=100, height=100, frame_count=5)


def test_plan_predicts_each_step_the_output_and_a_cost() -> None:
    pipeline = ops(
        Resize(width=800, height=800, mode=Resize.FILL),
        ExtractMetadata(),
        Convert(format=image_pb2.WEBP),
    )
    plan = plan_pipeline(PHOTO, pipeline, LIMITS)
    assert [(p.service, p.width, p.height) for p in plan.operations] == [
        ("imaging", 800, 800),
        ("metadata", 800, 800),
        ("imaging", 800, 800),
    ]
    assert [p.operation for p in plan.operations] == list(pipeline)
    assert (plan.output_width, plan.output_height) == (800, 800)
    assert plan.output_format == image_pb2.WEBP
    assert plan.output_frames == 1
    cost = plan.estimated_cost
    assert cost.decoded_megapixels == 12.0
    # resize touches the 12 MP input, convert the 0.64 MP result; metadata is not pixel work.
    assert cost.processed_megapixels == pytest.approx(12.64)
    expected = (
        DECODE_MS_PER_MP * 12 + OP_MS_PER_MP * 12.64 + ENCODE_MS_PER_MP[image_pb2.WEBP] * 0.64
    )
    assert cost.cpu_ms == round(expected)


def test_without_convert_the_input_format_is_kept_and_denoise_costs_more() -> None:
    cheap = plan_pipeline(PHOTO, ops(Resize(width=1000)), LIMITS)
    assert cheap.output_format == image_pb2.JPEG
    assert (cheap.output_width, cheap.output_height) == (1000, 750)
    dear = plan_pipeline(PHOTO, ops(Resize(width=1000), Denoise(auto=True)), LIMITS)
    assert dear.operations[1].service == "inference"
    assert dear.estimated_cost.cpu_ms - cheap.estimated_cost.cpu_ms == round(
        INFERENCE_MS_PER_MP * 0.75
    )


def test_the_exact_checks_run_on_the_header() -> None:
    # A crop outside a 4000x3000 image is only detectable with the header.
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(PHOTO, ops(Crop(x=3990, y=0, width=100, height=100)), LIMITS)
    assert err.value.violations[0].field.startswith("operations[0].crop")
    # The input is larger than max_output_dimension and nothing shrinks it.
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(PHOTO, ops(Convert(format=image_pb2.PNG)), LIMITS)
    assert err.value.reason == "OUTPUT_TOO_LARGE"


def test_animations_are_tracked_and_unknown_sizes_are_zero() -> None:
    plan = plan_pipeline(GIF, ops(Frames(start=1, count=2)), LIMITS)
    assert (plan.output_format, plan.output_frames) == (image_pb2.GIF, 2)
    assert plan.estimated_cost.decoded_megapixels == 0.05
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(GIF, ops(Convert(format=image_pb2.JPEG)), LIMITS)
    assert err.value.reason == "ANIMATION_UNSUPPORTED"
    small = image_pb2.Image(format=image_pb2.PNG, width=500, height=400)
    trimmed = plan_pipeline(small, ops(Trim()), LIMITS)
    assert (trimmed.output_width, trimmed.output_height) == (0, 0)
    assert trimmed.operations[0].width == 0


def test_auto_left_for_an_input_pixmesh_cannot_write_is_planned() -> None:
    heif = image_pb2.Image(format=image_pb2.HEIF, width=400, height=300, frame_count=1)
    plan = plan_pipeline(heif, ops(Resize(width=10), Convert(auto=True)), LIMITS)
    assert plan.output_format == image_pb2.JPEG  # before decoding; PNG if it has alpha


def test_unresolved_auto_and_missing_header_facts_are_rejected() -> None:
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(PHOTO, ops(Resize(width=10), Convert(auto=True)), LIMITS)
    assert err.value.violations[0].field == "operations[1].convert.auto"
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(image_pb2.Image(format=image_pb2.JPEG), ops(Resize(width=10)), LIMITS)
    assert err.value.violations[0].field == "image"


def test_the_plan_fingerprint_changes_with_what_plans_depend_on() -> None:
    # The gateway reuses a plan only under the fingerprint it was made with
    # (services/gateway/plans.py): every setting a plan reads must move it.
    base = plan_fingerprint(LIMITS, None, 4)
    assert plan_fingerprint(Limits(max_output_dimension=2000, max_operations=6), None, 4) == base
    others = {
        plan_fingerprint(Limits(max_output_dimension=2001, max_operations=6), None, 4),
        plan_fingerprint(LIMITS, image_pb2.WEBP, 4),
        plan_fingerprint(LIMITS, None, 6),
        plan_fingerprint(LIMITS, None, 4, video=VideoLimits(max_streams=3)),
    }
    assert base not in others and len(others) == 4


def test_list_operations_and_every_plan_name_the_fingerprint() -> None:
    # No pool: planning and ListOperations never use it.
    imaging = ImagingProcessor(None, LIMITS, webp_effort=6)  # type: ignore[arg-type]
    api = ImagingApi(imaging)
    expected = plan_fingerprint(LIMITS, None, 6)
    caps = asyncio.run(api.ListOperations(ListOperationsRequest(), None))
    assert caps.capabilities.plan_fingerprint == expected
    request = PlanPipelineRequest(image=PHOTO, operations=ops(Resize(width=800)))
    resp = asyncio.run(api.PlanPipeline(request, None))
    assert resp.plan_fingerprint == expected and resp.plan.output_width == 800
