"""PlanPipeline with renditions: one plan per rendition, and the whole job's cost."""

from typing import Any

import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Crop, Denoise, Frames, Resize
from services.imaging.limits import Limits
from services.imaging.plan import (
    DECODE_MS_PER_MP,
    ENCODE_MS_PER_MP,
    INFERENCE_MS_PER_MP,
    OP_MS_PER_MP,
    plan_pipeline,
)
from services.imaging.service import capabilities
from services.imaging.settings import ImagingSettings
from services.runtime.errors import InvalidArgument
from services.runtime.video import VideoLimits

from .samples import ops

LIMITS = Limits(max_output_dimension=2000, max_operations=4, max_renditions=3)
PHOTO = image_pb2.Image(image_id="img_1", format=image_pb2.JPEG, width=4000, height=3000)
GIF = image_pb2.Image(image_id="img_2", format=image_pb2.GIF, width=100, height=100, frame_count=5)


def rendition(name: str, *items: Any) -> operations_pb2.Rendition:
    return operations_pb2.Rendition(name=name, operations=ops(*items))


def test_each_rendition_is_planned_from_the_shared_result_and_the_cost_covers_the_job() -> None:
    shared = ops(Resize(width=2000))
    thumb = rendition("thumb", Resize(width=200), Convert(format=image_pb2.WEBP))
    full = rendition("full")
    plan = plan_pipeline(PHOTO, shared, LIMITS, renditions=[thumb, full])

    # The top level: the shared operations and their result, which the renditions start from.
    assert [(p.service, p.width, p.height) for p in plan.operations] == [("imaging", 2000, 1500)]
    assert (plan.output_width, plan.output_height, plan.output_format, plan.output_frames) == (
        2000,
        1500,
        image_pb2.JPEG,
        1,
    )
    assert [r.name for r in plan.renditions] == ["thumb", "full"]

    t = plan.renditions[0].plan
    assert [p.operation for p in t.operations] == list(thumb.operations)
    assert [(p.width, p.height) for p in t.operations] == [(200, 150), (200, 150)]
    assert (t.output_width, t.output_height, t.output_format, t.output_frames) == (
        200,
        150,
        image_pb2.WEBP,
        1,
    )
    # The resize touches the 3 MP shared result, the convert 0.03 MP; nothing is decoded.
    assert t.estimated_cost.decoded_megapixels == 0
    assert t.estimated_cost.processed_megapixels == pytest.approx(3.03)
    thumb_ms = OP_MS_PER_MP * 3.03 + ENCODE_MS_PER_MP[image_pb2.WEBP] * 0.03
    assert t.estimated_cost.cpu_ms == round(thumb_ms)

    f = plan.renditions[1].plan
    assert list(f.operations) == []
    assert (f.output_width, f.output_height, f.output_format) == (2000, 1500, image_pb2.JPEG)
    full_ms = ENCODE_MS_PER_MP[image_pb2.JPEG] * 3
    assert (f.estimated_cost.processed_megapixels, f.estimated_cost.cpu_ms) == (0, round(full_ms))

    # Decoded once, the shared resize once, then both renditions (no encode of the shared result).
    cost = plan.estimated_cost
    assert cost.decoded_megapixels == 12
    assert cost.processed_megapixels == pytest.approx(12 + 3.03)
    assert cost.cpu_ms == round(DECODE_MS_PER_MP * 12 + OP_MS_PER_MP * 12 + thumb_ms + full_ms)


def test_renditions_inherit_the_shared_format_and_other_services_may_run_before_them() -> None:
    plan = plan_pipeline(
        PHOTO,
        ops(Resize(width=1000), Denoise(auto=True), Convert(format=image_pb2.WEBP)),
        LIMITS,
        renditions=[rendition("same"), rendition("png", Convert(format=image_pb2.PNG))],
    )
    assert [p.service for p in plan.operations] == ["imaging", "inference", "imaging"]
    assert plan.output_format == image_pb2.WEBP
    assert [r.plan.output_format for r in plan.renditions] == [image_pb2.WEBP, image_pb2.PNG]
    # The denoise is paid once, in the job's cost.
    assert plan.estimated_cost.cpu_ms > INFERENCE_MS_PER_MP * 0.75
    assert all(r.plan.estimated_cost.cpu_ms < INFERENCE_MS_PER_MP * 0.75 for r in plan.renditions)


def test_animation_frames_are_tracked_into_each_rendition() -> None:
    plan = plan_pipeline(
        GIF,
        ops(Frames(start=1, count=4)),
        LIMITS,
        renditions=[
            rendition("anim"),
            rendition("still", Frames(count=1), Convert(format=image_pb2.JPEG)),
        ],
    )
    assert plan.output_frames == 4
    assert [(r.plan.output_format, r.plan.output_frames) for r in plan.renditions] == [
        (image_pb2.GIF, 4),
        (image_pb2.JPEG, 1),
    ]
    assert plan.estimated_cost.decoded_megapixels == 0.05  # 5 frames of 0.01 MP


def field_of(err: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return err.value.violations[0].field


def test_the_exact_checks_name_the_rendition_at_fault() -> None:
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(
            PHOTO,
            ops(Resize(width=1000)),  # 1000x750
            LIMITS,
            renditions=[rendition("ok"), rendition("bad", Crop(x=990, width=20, height=20))],
        )
    assert field_of(err).startswith("renditions[1].operations[0].crop.")
    # Without a resize in the shared operations, a rendition that keeps the 4000 px source.
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(
            PHOTO, [], LIMITS, renditions=[rendition("small", Resize(width=10)), rendition("big")]
        )
    assert (field_of(err), err.value.reason) == ("renditions[1].operations", "OUTPUT_TOO_LARGE")
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(
            PHOTO,
            ops(Resize(width=10)),
            LIMITS,
            renditions=[rendition("a", Resize(width=5), Convert(auto=True))],
        )
    assert field_of(err) == "renditions[0].operations[1].convert.auto"
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(
            PHOTO, ops(Resize(width=10)), LIMITS, renditions=[rendition("a", Denoise(auto=True))]
        )
    assert (field_of(err), err.value.reason) == (
        "renditions[0].operations[0]",
        "NOT_A_RENDITION_OPERATION",
    )
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(
            PHOTO,
            ops(Resize(width=10)),
            LIMITS,
            renditions=[rendition(f"r{i}") for i in range(4)],
        )
    assert field_of(err) == "renditions"


def test_the_limit_on_renditions_is_advertised() -> None:
    assert Limits().max_renditions == 10
    assert LIMITS.to_proto(VideoLimits()).max_renditions == 3
    assert capabilities(LIMITS).limits.max_renditions == 3
    assert ImagingSettings(max_renditions=7).limits.max_renditions == 7
    with pytest.raises(ValueError):
        Limits(max_renditions=0)
