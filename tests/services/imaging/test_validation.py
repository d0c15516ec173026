import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import (
    Convert,
    Crop,
    Denoise,
    ExtractMetadata,
    Frames,
    Resize,
    Rotate,
    Trim,
)
from services.imaging.errors import (
    ANIMATION_UNSUPPORTED,
    OUTPUT_TOO_LARGE,
    TOO_MANY_OPERATIONS,
    UNKNOWN_OPERATION,
    UNSUPPORTED_FORMAT,
    UNSUPPORTED_OPERATION,
)
from services.imaging.limits import Limits
from services.imaging.ops import Size
from services.imaging.validation import validate_job, validate_pipeline
from services.runtime.errors import InvalidArgument
from services.runtime.imageprobe import ImageHeader

from .samples import ops

LIMITS = Limits(max_output_dimension=2000, max_operations=4, max_pixels=3_000_000)
JPEG_4K = ImageHeader(image_pb2.JPEG, 4000, 3000, 1, 1_000_000)


def rejects(
    operations: list[operations_pb2.Operation],
    header: ImageHeader | None = JPEG_4K,
    **kwargs: object,
) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        validate_pipeline(operations, header, LIMITS, **kwargs)  # type: ignore[arg-type]
    return err.value


def test_sizes_are_predicted_step_by_step() -> None:
    plan = validate_pipeline(
        ops(Resize(width=800), Rotate(angle=90), Crop(x=100, y=0, width=500, height=800)),
        JPEG_4K,
        LIMITS,
    )
    assert [s.size for s in plan.operations] == [Size(800, 600), Size(600, 800), Size(500, 800)]
    assert plan.output_size == Size(500, 800)
    assert plan.output_format == image_pb2.JPEG and plan.quality == 0


def test_crop_is_checked_against_the_size_at_its_step() -> None:
    err = rejects(ops(Resize(width=800), Crop(x=0, y=0, width=801, height=10)))
    assert err.violations[0].field == "operations[1].crop.width"


def test_output_dimension_limit() -> None:
    err = rejects(ops(Resize(width=1500, height=1500, mode=Resize.FORCE), Rotate(angle=45)))
    assert err.reason == OUTPUT_TOO_LARGE
    assert err.violations[0].field == "operations[1].rotate"
    assert "2122x2122" in err.message


def test_output_pixel_limit() -> None:
    small = ImageHeader(image_pb2.JPEG, 1000, 1000, 1, 10)
    enlarge = Resize(width=2000, height=2000, mode=Resize.FORCE, enlarge=True)
    err = rejects(ops(enlarge), small)
    assert err.reason == OUTPUT_TOO_LARGE
    assert err.violations[0].field == "operations[0].resize"
    assert "3000000 pixels" in err.message


def test_a_large_input_is_fine_if_the_pipeline_shrinks_it() -> None:
    # 4000 px wide > max_output_dimension, but only the final output counts...
    plan = validate_pipeline(ops(Rotate(angle=90), Resize(width=1000)), JPEG_4K, LIMITS)
    assert plan.output_size == Size(1000, 1333)
    # ... so without a resize the whole pipeline is blamed, not the operation that kept the size.
    err = rejects(ops(Rotate(angle=90)))
    assert err.reason == OUTPUT_TOO_LARGE
    assert err.violations[0].field == "operations"


def test_a_metadata_only_job_has_no_output_to_limit() -> None:
    # A 30000x1 strip: a job of metadata operations writes no pixels, so the output limit
    # does not apply...
    strip = ImageHeader(image_pb2.PNG, 30000, 1, 1, 200)
    (plan,) = validate_job(ops(ExtractMetadata()), (), strip, LIMITS, allow_other_services=True)
    assert plan.operations[0].name == "extract_metadata"
    # ... while any operation or rendition that writes pixels brings it back.
    with pytest.raises(InvalidArgument) as err:
        validate_job(
            ops(ExtractMetadata(), Rotate(angle=180)), (), strip, LIMITS, allow_other_services=True
        )
    assert err.value.reason == OUTPUT_TOO_LARGE
    thumb = operations_pb2.Rendition(name="thumb")
    with pytest.raises(InvalidArgument) as err:
        validate_job(ops(ExtractMetadata()), [thumb], strip, LIMITS, allow_other_services=True)
    assert err.value.reason == OUTPUT_TOO_LARGE


def test_too_many_operations() -> None:
    err = rejects(ops(*[Rotate(angle=90)] * 5))
    assert err.reason == TOO_MANY_OPERATIONS
    assert err.violations[0].field == "operations"


def test_empty_operation_is_rejected_not_skipped() -> None:
    err = rejects([ops(Rotate(angle=90))[0], operations_pb2.Operation()])
    assert err.reason == UNKNOWN_OPERATION
    assert err.violations[0].field == "operations[1]"


def test_operations_of_other_services() -> None:
    pipeline = ops(
        Resize(width=800), Denoise(auto=True), ExtractMetadata(), Crop(width=800, height=600)
    )
    err = rejects(pipeline)
    assert err.reason == UNSUPPORTED_OPERATION
    assert err.violations[0].field == "operations[1].denoise"
    plan = validate_pipeline(pipeline, JPEG_4K, LIMITS, allow_other_services=True)
    assert plan.operations[1].spec is None
    assert plan.output_size == Size(800, 600)  # assumed to keep the size


def test_convert_to_a_format_we_cannot_write() -> None:
    err = rejects(ops(Convert(format=image_pb2.BMP)))
    assert err.reason == UNSUPPORTED_FORMAT
    assert err.violations[0].field == "operations[0].convert.format"
    assert rejects(ops(Convert())).reason == UNSUPPORTED_FORMAT
    assert rejects(ops(Convert(format=image_pb2.PNG, quality=101))).violations[0].field == (
        "operations[0].convert.quality"
    )


def test_output_format() -> None:
    two = ops(Convert(format=image_pb2.PNG), Convert(format=image_pb2.WEBP, quality=70))
    plan = validate_pipeline(two, ImageHeader(image_pb2.JPEG, 1000, 800, 1, 10), LIMITS)
    assert (plan.output_format, plan.quality) == (image_pb2.WEBP, 70)
    heif = ImageHeader(image_pb2.HEIF, 100, 100, 1, 10)
    assert validate_pipeline([], heif, LIMITS).output_format == image_pb2.JPEG
    bmp = ImageHeader(image_pb2.BMP, 100, 100, 1, 10)
    assert validate_pipeline([], bmp, LIMITS).output_format == image_pb2.PNG
    assert validate_pipeline([], bmp, LIMITS, default_format=image_pb2.WEBP).output_format == (
        image_pb2.WEBP
    )


def test_without_a_header_only_parameters_are_checked() -> None:
    plan = validate_pipeline(ops(Rotate(angle=30), Crop(x=9000, width=10, height=10)), None, LIMITS)
    assert plan.operations[0].size is None
    assert plan.output_size == Size(10, 10) and plan.output_format is None
    assert rejects(ops(Resize(width=2001)), None).reason == OUTPUT_TOO_LARGE


GIF_ANIMATION = ImageHeader(image_pb2.GIF, 400, 300, 5, 10_000)


def test_animations_are_tracked_frame_by_frame() -> None:
    plan = validate_pipeline(ops(Resize(width=200)), GIF_ANIMATION, LIMITS)
    assert (plan.input_frames, plan.output_frames, plan.output_format) == (5, 5, image_pb2.GIF)
    plan = validate_pipeline(ops(Frames(start=1, count=2)), GIF_ANIMATION, LIMITS)
    assert plan.output_frames == 2
    still = validate_pipeline(
        ops(Frames(count=1), Convert(format=image_pb2.JPEG)), GIF_ANIMATION, LIMITS
    )
    assert still.output_frames == 1 and still.output_format == image_pb2.JPEG


def test_an_animation_into_a_still_format_is_refused() -> None:
    err = rejects(ops(Convert(format=image_pb2.JPEG)), GIF_ANIMATION)
    assert err.reason == ANIMATION_UNSUPPORTED
    assert err.violations[0].field == "operations[0].convert.format"
    # BMP input would become PNG, which animates; a TIFF's pages are not an animation.
    tiff_pages = ImageHeader(image_pb2.TIFF, 400, 300, 3, 10_000)
    plan = validate_pipeline([], tiff_pages, LIMITS)
    assert (plan.input_frames, plan.output_frames) == (1, 1)


def test_trim_makes_the_size_unknown() -> None:
    plan = validate_pipeline(ops(Trim(), Rotate(angle=90)), JPEG_4K, LIMITS)
    assert [s.size for s in plan.operations] == [None, None]
    assert plan.output_size is None
    # A crop after a trim is checked against the real size when it runs.
    plan = validate_pipeline(ops(Trim(), Crop(x=5000, width=10, height=10)), JPEG_4K, LIMITS)
    assert plan.output_size == Size(10, 10)


def test_the_last_convert_gives_the_options() -> None:
    plan = validate_pipeline(
        ops(Convert(format=image_pb2.PNG), Convert(format=image_pb2.JPEG, progressive=True)),
        JPEG_4K_SMALL,
        LIMITS,
    )
    assert plan.convert is not None and plan.convert.index == 1
    assert plan.options.progressive and plan.quality == 0
    assert validate_pipeline([], JPEG_4K_SMALL, LIMITS).options == Convert()


JPEG_4K_SMALL = ImageHeader(image_pb2.JPEG, 1000, 800, 1, 10)


def test_denoise_of_an_animation_is_refused_unless_one_frame_is_kept() -> None:
    """The inference service denoises one picture: an animated GIF came back as its first
    frame (a PNG) while the plan promised the animation."""
    err = rejects(ops(Denoise(auto=True)), GIF_ANIMATION, allow_other_services=True)
    assert err.reason == ANIMATION_UNSUPPORTED
    assert err.violations[0].field == "operations[0].denoise"
    plan = validate_pipeline(
        ops(Frames(count=1), Denoise(auto=True)), GIF_ANIMATION, LIMITS, allow_other_services=True
    )
    assert plan.output_frames == 1


def test_the_plan_predicts_the_format_a_denoise_stage_writes() -> None:
    """The inference service writes JPEG, PNG, WebP or TIFF (anything else becomes PNG), and a
    later imaging stage keeps what it was given: the plan says what the workers will write."""
    gif = ImageHeader(image_pb2.GIF, 400, 300, 1, 10)
    heif = ImageHeader(image_pb2.HEIF, 400, 300, 1, 10)
    avif = ImageHeader(image_pb2.AVIF, 400, 300, 1, 10)

    def fmt(pipeline: list[operations_pb2.Operation], header: ImageHeader) -> int | None:
        plan = validate_pipeline(pipeline, header, LIMITS, allow_other_services=True)
        return plan.output_format

    for header in (gif, heif, avif):
        assert fmt(ops(Denoise(auto=True)), header) == image_pb2.PNG
        assert fmt(ops(Denoise(auto=True), Resize(width=100)), header) == image_pb2.PNG
    assert fmt(ops(Denoise(auto=True)), JPEG_4K_SMALL) == image_pb2.JPEG
    # a Convert before the denoise sets the format the inference service is given
    assert fmt(ops(Convert(format=image_pb2.WEBP), Denoise(auto=True)), gif) == image_pb2.WEBP
    # a Convert after it decides the output
    assert fmt(ops(Denoise(auto=True), Convert(format=image_pb2.GIF)), gif) == image_pb2.GIF
    # an imaging stage before the denoise keeps the source's format when it can write it
    assert fmt(ops(Resize(width=100), Denoise(auto=True)), gif) == image_pb2.PNG
