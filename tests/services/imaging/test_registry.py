import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.service import capabilities
from services.runtime.pipeline import IMAGING, owner
from services.runtime.video import VideoLimits

ONEOF = operations_pb2.Operation.DESCRIPTOR.oneofs_by_name["op"]


def test_every_imaging_operation_of_the_contract_is_registered() -> None:
    for field in ONEOF.fields:
        op = operations_pb2.Operation()
        getattr(op, field.name).SetInParent()
        if owner(op) == IMAGING:
            assert field.name in REGISTRY, f"imaging op {field.name} has no module"
        else:
            assert field.name not in REGISTRY


def test_each_spec_handles_its_oneof_message() -> None:
    for name, spec in REGISTRY.items():
        assert spec.name == name == spec.info.name
        field = operations_pb2.Operation.DESCRIPTOR.fields_by_name[name]
        assert field.containing_oneof is ONEOF
        assert spec.message.DESCRIPTOR is field.message_type
        assert spec.info.service == "imaging" and spec.info.available
        assert {p.name for p in spec.info.parameters} == {
            f.name for f in spec.message.DESCRIPTOR.fields
        }
        assert all(p.description and p.constraint for p in spec.info.parameters)


def test_parameter_types_come_from_the_proto() -> None:
    params = {p.name: p.type for p in REGISTRY["resize"].info.parameters}
    assert params == {
        "width": "uint32",
        "height": "uint32",
        "mode": "pixmesh.common.v1.Resize.Mode",
        "enlarge": "bool",
        "gravity": "pixmesh.common.v1.Gravity",
        "dpr": "float",
        "min_width": "uint32",
        "min_height": "uint32",
        "max_width": "uint32",
        "max_height": "uint32",
    }
    assert {p.name: p.type for p in REGISTRY["redact"].info.parameters}["regions"] == (
        "repeated pixmesh.common.v1.Region"
    )
    assert {p.name: p.type for p in REGISTRY["rotate"].info.parameters} == {
        "angle": "double",
        "background": "string",
    }


def test_the_entries_are_the_protos() -> None:
    """ListOperations says what the proto says: comments and buf.validate rules."""
    params = {p.name: p for p in REGISTRY["rotate"].info.parameters}
    assert params["angle"].constraint == "-360..360"
    assert params["angle"].description == "Degrees clockwise, -360..360."
    assert REGISTRY["rotate"].info.description == "Rotate clockwise. Multiples of 90 are lossless."


def test_capabilities() -> None:
    limits = Limits(max_output_dimension=4000, max_operations=5)
    caps = capabilities(limits)
    assert [op.name for op in caps.operations] == list(REGISTRY)
    assert caps.limits.max_output_dimension == 4000
    assert caps.limits.max_operations == 5
    assert caps.limits.max_pixels == limits.max_pixels
    assert image_pb2.HEIF in caps.input_formats and image_pb2.BMP in caps.input_formats
    assert image_pb2.HEIF not in caps.output_formats
    assert image_pb2.AVIF in caps.output_formats


def test_capabilities_show_the_video_limits() -> None:
    video = VideoLimits(max_bytes=5_000_000, max_duration_s=90.5, max_streams=3)
    limits = capabilities(Limits(), video).limits
    assert (limits.max_video_bytes, limits.max_video_duration_s, limits.max_video_streams) == (
        5_000_000,
        90.5,
        3,
    )
    # None: the defaults video_run enforces, never 0.
    default = capabilities(Limits()).limits
    assert default.max_video_bytes == VideoLimits().max_bytes > 0
    assert default.max_video_streams == VideoLimits().max_streams > 0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)
