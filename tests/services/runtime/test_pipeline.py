import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.pipeline import plan_stages, request_hash

Op = operations_pb2.Operation


def resize(w: int) -> Op:
    return Op(resize=operations_pb2.Resize(width=w))


def test_consecutive_ops_of_one_service_share_a_stage() -> None:
    ops = [
        resize(100),
        Op(convert=operations_pb2.Convert(format=image_pb2.WEBP)),
        Op(extract_metadata=operations_pb2.ExtractMetadata()),
        Op(denoise=operations_pb2.Denoise(auto=True)),
        resize(50),
    ]
    stages = plan_stages(ops)
    assert [s.service for s in stages] == ["imaging", "metadata", "inference", "imaging"]
    assert [len(s.operations) for s in stages] == [2, 1, 1, 1]


def test_empty_operation_is_rejected_not_skipped() -> None:
    with pytest.raises(InvalidArgument) as exc:
        plan_stages([resize(10), Op()])
    assert exc.value.reason == "UNKNOWN_OPERATION"
    assert exc.value.violations[0].field == "operations[1]"


def test_request_hash_depends_on_image_and_every_op() -> None:
    img = image_pb2.Image(image_id="img_1", sha256="ab")
    base = request_hash(img, [resize(100)])
    assert base == request_hash(img, [resize(100)])
    assert base != request_hash(img, [resize(101)])
    assert base != request_hash(image_pb2.Image(image_id="img_2"), [resize(100)])
    assert base != request_hash(img, [resize(100), resize(100)])
