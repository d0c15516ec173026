"""The video operation's proto rules (buf.validate) are checked like every other operation's:
`check_video_job` runs at CreateJob and PlanJob on the gateway and in imaging's PlanPipeline,
where the video operation was never planned (only what follows it), so `fractions: [1.5]`,
`timestamps_s: [-3]`, both together or `window_s: 50` made a job that ran."""

from __future__ import annotations

import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.video import check_video_job

VIDEO = image_pb2.Image.VIDEO


def _frames(**fields: object) -> list[operations_pb2.Operation]:
    return [operations_pb2.Operation(video_frames=operations_pb2.VideoFrames(**fields))]


@pytest.mark.parametrize(
    ("operations", "field"),
    [
        (_frames(fractions=[0.5, 1.5]), "operations[0].video_frames.fractions[1]"),
        (_frames(timestamps_s=[-3]), "operations[0].video_frames.timestamps_s[0]"),
        (_frames(fractions=[0.5], timestamps_s=[1]), "operations[0].video_frames.fractions"),
        (_frames(window_s=50), "operations[0].video_frames.window_s"),
        (
            [operations_pb2.Operation(video_sheet=operations_pb2.VideoSheet(count=101))],
            "operations[0].video_sheet.count",
        ),
        (
            [
                operations_pb2.Operation(
                    video_preview=operations_pb2.VideoPreview(start_s=-1, duration_s=2)
                )
            ],
            "operations[0].video_preview.start_s",
        ),
    ],
)
def test_a_video_operation_breaking_its_rules_is_refused(
    operations: list[operations_pb2.Operation], field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_video_job(operations, [], VIDEO)
    assert err.value.reason == "INVALID_OPERATION"
    assert field in [v.field for v in err.value.violations]


def test_a_video_operation_within_its_rules_passes() -> None:
    check_video_job(_frames(fractions=[0.0, 1.0], window_s=30), [], VIDEO)
    check_video_job(_frames(timestamps_s=[0, 86400]), [], VIDEO)
