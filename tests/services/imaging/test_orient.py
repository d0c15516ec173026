"""Orient: the EXIF orientation is applied by default, and `orient IGNORE` first keeps the
stored pixels (pipeline, renditions, JPEG draft, validation and PlanPipeline)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Crop, Orient, Rendition, Resize
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.pipeline import run
from services.imaging.plan import plan_pipeline
from services.imaging.validation import validate_pipeline
from services.runtime.errors import InvalidArgument
from services.runtime.imageprobe import ImageHeader

from .samples import BLUE, GREEN, RED, close, colour_at, decode, exif_rotated_jpeg, ops, scene

LIMITS = Limits()
IGNORE = Orient(mode=Orient.IGNORE)
AUTO = Orient(mode=Orient.AUTO)
ORIENTATION = 0x0112


def sideways() -> bytes:
    """Shown 240x320 (the scene upright), stored 320x240 turned 90° anticlockwise (EXIF 6)."""
    return exif_rotated_jpeg(scene(240, 320), orientation=6)


def stored_pixels(data: bytes) -> Image.Image:
    return decode(data).convert("RGB")  # Pillow does not apply the orientation by itself


def test_ignore_keeps_the_stored_pixels_and_drops_the_tag() -> None:
    data = sideways()
    result = run(data, ops(IGNORE, Convert(format=image_pb2.PNG)), limits=LIMITS).image
    out = decode(result.data)
    assert out.size == (result.width, result.height) == (320, 240)
    assert out.getexif().get(ORIENTATION) is None  # shows as stored in every viewer
    # The stored pixels, losslessly: only the JPEG decode is between them.
    assert out.convert("RGB").tobytes() == stored_pixels(data).tobytes()
    # Stored 90° anticlockwise: the red square (upright top-left) is at the bottom left.
    assert close(colour_at(out, 5, 234), (*RED, 255))
    assert close(colour_at(out, 317, 120), (*GREEN, 255))  # the green bar runs down the right


def test_by_default_and_with_auto_the_pixels_are_turned_upright() -> None:
    data = sideways()
    default = run(data, ops(Convert(format=image_pb2.PNG)), limits=LIMITS).image
    auto = run(data, ops(AUTO, Convert(format=image_pb2.PNG)), limits=LIMITS).image
    unspecified = run(data, ops(Orient(), Convert(format=image_pb2.PNG)), limits=LIMITS).image
    assert default.data == auto.data == unspecified.data
    out = decode(default.data)
    assert out.size == (240, 320)
    assert close(colour_at(out, 5, 5), (*RED, 255))
    assert out.getexif().get(ORIENTATION) is None


def test_ignore_keeps_no_tag_with_the_copyright_either() -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[0x8298] = "(c) Photographer"
    buf = io.BytesIO()
    scene(320, 240).save(buf, "JPEG", quality=92, exif=exif.tobytes())
    keep = Convert(format=image_pb2.JPEG, keep_copyright=True)
    out = decode(run(buf.getvalue(), ops(IGNORE, keep), limits=LIMITS).image.data)
    assert out.size == (320, 240)
    tags = out.getexif()
    assert tags.get(0x8298) == "(c) Photographer" and tags.get(ORIENTATION) is None


def test_operations_after_ignore_work_on_the_stored_image() -> None:
    data = sideways()
    # The top 60 rows of the stored 320x240 image; upright, the same crop would be 240 wide.
    result = run(data, ops(IGNORE, Crop(x=0, y=0, width=320, height=60)), limits=LIMITS).image
    assert (result.width, result.height) == (320, 60)
    with pytest.raises(InvalidArgument, match=r"operations\[1\]\.crop"):
        run(data, ops(IGNORE, Crop(x=0, y=0, width=240, height=320)), limits=LIMITS)


def draft_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int] | None]:
    calls: list[tuple[int, int] | None] = []
    real_draft = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        calls.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return calls


def test_the_jpeg_draft_still_works_after_orient(monkeypatch: pytest.MonkeyPatch) -> None:
    big = exif_rotated_jpeg(scene(960, 1280), orientation=6)  # stored 1280x960
    calls = draft_spy(monkeypatch)
    ignored = run(big, ops(IGNORE, Resize(width=320)), limits=LIMITS).image
    assert calls == [(320, 240)]  # 4x: decoded at 1/4 of the stored size
    assert (ignored.width, ignored.height) == (320, 240)
    out = decode(ignored.data)
    assert close(colour_at(out, 5, 234), (*RED, 255), 24)  # still sideways

    calls.clear()
    auto = run(big, ops(AUTO, Resize(width=240)), limits=LIMITS).image
    assert calls == [(320, 240)]  # the same 1/4 decode, then turned upright
    assert (auto.width, auto.height) == (240, 320)
    assert close(colour_at(decode(auto.data), 5, 5), (*RED, 255), 24)
    # The drafted result matches a full decode of the same pipeline in size.
    assert (auto.width, auto.height) == (
        run(big, ops(Resize(width=240)), limits=LIMITS).image.width,
        320,
    )


def rendition(name: str, *items: object) -> Rendition:
    return Rendition(name=name, operations=ops(*items))


def test_the_shared_operations_decide_for_every_rendition(monkeypatch: pytest.MonkeyPatch) -> None:
    big = exif_rotated_jpeg(scene(960, 1280), orientation=6)
    calls = draft_spy(monkeypatch)
    renditions = [rendition("large", Resize(width=640)), rendition("small", Resize(width=160))]
    ignored = dict(run(big, ops(IGNORE), renditions, limits=LIMITS).renditions)
    assert calls == [(640, 480)]  # drafted for the largest rendition, after the orient
    assert [(r.width, r.height) for r in ignored.values()] == [(640, 480), (160, 120)]
    for result in ignored.values():
        out = decode(result.data)
        assert close(colour_at(out, 3, out.height - 3), (*RED, 255), 24)  # sideways
    upright = dict(run(big, [], renditions, limits=LIMITS).renditions)
    assert [(r.width, r.height) for r in upright.values()] == [(640, 853), (160, 213)]
    assert close(colour_at(decode(upright["small"].data), 3, 3), (*RED, 255), 24)


def test_orient_anywhere_but_first_is_refused() -> None:
    data = sideways()
    for pipeline, field in (
        (ops(Resize(width=100), IGNORE), "operations[1].orient"),
        (ops(IGNORE, IGNORE), "operations[1].orient"),
        (ops(Resize(width=100), AUTO), "operations[1].orient"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            run(data, pipeline, limits=LIMITS)
        assert [v.field for v in caught.value.violations] == [field]
        assert caught.value.message.startswith(f"{field}: must be the first operation")


def test_orient_in_a_rendition_is_refused() -> None:
    data = sideways()
    cases = (
        ([], [rendition("a", IGNORE)], "renditions[0].operations[0].orient"),
        (
            ops(Resize(width=100)),
            [rendition("a"), rendition("b", Resize(width=50), AUTO)],
            "renditions[1].operations[1].orient",
        ),
        # Even right after an orient of the job's: the job's operations decide.
        (ops(IGNORE), [rendition("a", IGNORE)], "renditions[0].operations[0].orient"),
    )
    for shared, renditions, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            run(data, shared, renditions, limits=LIMITS)
        assert [v.field for v in caught.value.violations] == [field]
        assert "cannot be used in a rendition" in caught.value.message


def test_unknown_mode_is_refused() -> None:
    op = operations_pb2.Operation()
    op.orient.mode = 7  # type: ignore[assignment]
    header = ImageHeader(image_pb2.JPEG, 240, 320, 1, 1000, orientation=6)
    with pytest.raises(InvalidArgument, match=r"operations\[0\]\.orient\.mode"):
        validate_pipeline([op], header, LIMITS)


def test_listed_with_its_parameter() -> None:
    info = REGISTRY["orient"].info
    assert info.service == "imaging" and info.available
    assert [(p.name, p.type) for p in info.parameters] == [
        ("mode", "pixmesh.common.v1.Orient.Mode")
    ]
    assert "first" in info.description


# PlanPipeline: from the header the gateway recorded, orientation included.
PHONE = image_pb2.Image(
    image_id="img_1", format=image_pb2.JPEG, width=3024, height=4032, orientation=6
)


def test_plan_uses_the_stored_size_with_ignore() -> None:
    pipeline = ops(IGNORE, Resize(width=800), Convert(format=image_pb2.PNG))
    plan = plan_pipeline(PHONE, pipeline, LIMITS)
    assert [(p.width, p.height) for p in plan.operations] == [(4032, 3024), (800, 600), (800, 600)]
    assert (plan.output_width, plan.output_height) == (800, 600)
    upright = plan_pipeline(PHONE, pipeline[1:], LIMITS)
    assert (upright.output_width, upright.output_height) == (800, 1067)
    # orient costs nothing of its own: the estimate is the one of the same pixels stored upright.
    landscape = image_pb2.Image(format=image_pb2.JPEG, width=4032, height=3024, orientation=1)
    assert plan.estimated_cost == plan_pipeline(landscape, pipeline[1:], LIMITS).estimated_cost
    assert plan.estimated_cost != upright.estimated_cost


def test_plan_orientations() -> None:
    pipeline = ops(IGNORE, Resize(width=800))
    for orientation, expected in ((0, (800, 1067)), (1, (800, 1067)), (3, (800, 1067))):
        image = image_pb2.Image()
        image.CopyFrom(PHONE)
        image.orientation = orientation
        plan = plan_pipeline(image, pipeline, LIMITS)
        assert (plan.output_width, plan.output_height) == expected, orientation
    for orientation in (5, 6, 7, 8):
        image = image_pb2.Image()
        image.CopyFrom(PHONE)
        image.orientation = orientation
        plan = plan_pipeline(image, pipeline, LIMITS)
        assert (plan.output_width, plan.output_height) == (800, 600), orientation
    image.orientation = 9
    with pytest.raises(InvalidArgument, match=r"image\.orientation"):
        plan_pipeline(image, pipeline, LIMITS)


def test_plan_with_renditions_starts_from_the_stored_size() -> None:
    renditions = [rendition("thumb", Resize(width=200)), rendition("same")]
    plan = plan_pipeline(PHONE, ops(IGNORE), LIMITS, renditions=renditions)
    assert (plan.output_width, plan.output_height) == (4032, 3024)
    sizes = [(r.plan.output_width, r.plan.output_height) for r in plan.renditions]
    assert sizes == [(200, 150), (4032, 3024)]
    with pytest.raises(InvalidArgument) as caught:
        plan_pipeline(PHONE, [], LIMITS, renditions=[rendition("a", IGNORE)])
    assert [v.field for v in caught.value.violations] == ["renditions[0].operations[0].orient"]


def test_pixels_match_a_plain_transpose() -> None:
    data = sideways()
    ignored = decode(
        run(data, ops(IGNORE, Convert(format=image_pb2.PNG)), limits=LIMITS).image.data
    )
    upright = decode(run(data, ops(Convert(format=image_pb2.PNG)), limits=LIMITS).image.data)
    # EXIF 6 means "turn 90° clockwise to show": the upright output is the stored one turned.
    turned = ignored.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert turned.tobytes() == upright.convert("RGB").tobytes()
    assert close(colour_at(upright, 200, 250), (*BLUE, 255), 24)
