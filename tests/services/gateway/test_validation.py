import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.gateway.validation import validate_pipeline
from services.runtime.errors import FailedPrecondition, InvalidArgument

Op = operations_pb2.Operation


def check(ops: list[Op], unavailable: dict[str, str] | None = None) -> None:
    validate_pipeline(ops, max_operations=4, max_dimension=1000, unavailable=unavailable or {})


def test_valid_pipeline_passes() -> None:
    check(
        [
            Op(resize=operations_pb2.Resize(width=800, height=600)),
            Op(convert=operations_pb2.Convert(format=image_pb2.WEBP, quality=80)),
            Op(extract_metadata=operations_pb2.ExtractMetadata()),
        ]
    )


def test_every_violation_is_reported_with_its_field() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check(
            [
                Op(resize=operations_pb2.Resize(width=5000, mode=operations_pb2.Resize.FILL)),
                Op(convert=operations_pb2.Convert(format=image_pb2.BMP, quality=101)),
            ]
        )
    fields = [v.field for v in exc.value.violations]
    # FILL without a height breaks the proto's rule of resize.mode (gateway, imaging and SDK alike).
    assert fields == [
        "operations[0].resize.mode",
        "operations[0].resize.width",
        "operations[1].convert.format",
        "operations[1].convert.quality",
    ]


def test_limits_on_count_and_emptiness() -> None:
    with pytest.raises(InvalidArgument):
        check([])
    with pytest.raises(InvalidArgument) as exc:
        check([Op(flip=operations_pb2.Flip())] * 5)
    assert exc.value.reason == "TOO_MANY_OPERATIONS"


def test_unavailable_operation_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check([Op(denoise=operations_pb2.Denoise(auto=True))], {"denoise": "no model"})
    assert exc.value.reason == "OPERATION_UNAVAILABLE"
    assert "no model" in exc.value.message


def test_resize_modes_and_dpr() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check(
            [
                Op(resize=operations_pb2.Resize(width=10, mode=operations_pb2.Resize.AUTO)),
                Op(resize=operations_pb2.Resize(width=600, dpr=2)),
            ]
        )
    fields = [v.field for v in exc.value.violations]
    assert fields == ["operations[0].resize.mode", "operations[1].resize.width"]
    check([Op(resize=operations_pb2.Resize(width=500, dpr=2))])


def test_dpr_has_one_limit_the_protos() -> None:
    """The SDK once allowed dpr up to 10 and imaging 8: the one rule is Resize.dpr's, 0..8."""
    check([Op(resize=operations_pb2.Resize(width=100, dpr=8))])
    with pytest.raises(InvalidArgument) as exc:
        check([Op(resize=operations_pb2.Resize(width=100, dpr=9))])
    assert [(v.field, v.description) for v in exc.value.violations] == [
        ("operations[0].resize.dpr", "must be between 0 and 8")
    ]


def test_rules_of_other_services_come_from_the_proto() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check([Op(denoise=operations_pb2.Denoise(sigma=300, color_mode=9))])
    assert [(v.field, v.description) for v in exc.value.violations] == [
        ("operations[0].denoise.sigma", "must be between 0 and 255"),
        (
            "operations[0].denoise.color_mode",
            "must be one of LUMINANCE, PER_CHANNEL, AUTO, OPPONENT",
        ),
    ]
