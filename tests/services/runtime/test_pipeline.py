import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.runtime.errors import InvalidArgument
from services.runtime.pipeline import check_renditions, plan_stages, request_hash

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


def rendition(name: str, *ops: Op) -> operations_pb2.Rendition:
    return operations_pb2.Rendition(name=name, operations=ops)


def test_renditions_hang_off_the_last_imaging_stage() -> None:
    thumb, large = rendition("thumb", resize(100)), rendition("large", resize(1000))
    stages = plan_stages([resize(2000)], [thumb, large])
    assert [(s.service, len(s.operations), len(s.renditions)) for s in stages] == [
        ("imaging", 1, 2)
    ]
    # After a stage of another service (or with no operations), a new imaging stage branches.
    denoise = Op(denoise=operations_pb2.Denoise(auto=True))
    stages = plan_stages([denoise], [thumb])
    assert [(s.service, len(s.operations), len(s.renditions)) for s in stages] == [
        ("inference", 1, 0),
        ("imaging", 0, 1),
    ]
    assert [(s.service, len(s.renditions)) for s in plan_stages([], [thumb])] == [("imaging", 1)]


@pytest.mark.parametrize(
    ("renditions", "field", "reason"),
    [
        ([rendition("a"), rendition("b"), rendition("c")], "renditions", "TOO_MANY_RENDITIONS"),
        ([rendition("Thumb")], "renditions[0].name", "BAD_RENDITION_NAME"),
        ([rendition("")], "renditions[0].name", "BAD_RENDITION_NAME"),
        ([rendition("a"), rendition("a")], "renditions[1].name", "DUPLICATE_RENDITION"),
        (
            [rendition("a", resize(10), Op(extract_metadata=operations_pb2.ExtractMetadata()))],
            "renditions[0].operations[1]",
            "NOT_A_RENDITION_OPERATION",
        ),
        ([rendition("a", Op())], "renditions[0].operations[0]", "UNKNOWN_OPERATION"),
    ],
)
def test_bad_renditions_are_rejected_with_the_field_at_fault(
    renditions: list[operations_pb2.Rendition], field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_renditions(renditions, max_renditions=2)
    assert exc.value.reason == reason
    assert exc.value.violations[0].field == field


def test_good_renditions_pass() -> None:
    check_renditions([rendition("thumb-1", resize(10)), rendition("full_size")], max_renditions=2)


def test_request_hash_covers_renditions() -> None:
    img = image_pb2.Image(image_id="img_1", sha256="ab")
    plain = request_hash(img, [resize(100)])
    with_one = request_hash(img, [resize(100)], [rendition("a", resize(10))])
    assert plain == request_hash(img, [resize(100)], [])
    assert (
        len({plain, with_one, request_hash(img, [resize(100)], [rendition("b", resize(10))])}) == 3
    )


def test_the_planners_inference_formats_are_what_the_inference_service_writes() -> None:
    """The planner predicts a denoise stage's output with inference_output_format; the
    inference service must write exactly that for every input format."""
    from services.inference import imageio
    from services.runtime.pipeline import INFERENCE_FORMATS, inference_output_format

    assert set(imageio.WRITABLE_FORMATS) == set(INFERENCE_FORMATS)
    for fmt in image_pb2.ImageFormat.values():
        assert imageio.output_format(fmt) == inference_output_format(fmt)
