"""Convert.effort, the WebP encoder effort (libwebp's method), and its default PIXMESH_WEBP_EFFORT:
encoded, validated, listed, priced and threaded from the setting to the child that encodes."""

from __future__ import annotations

import pytest
from PIL import Image, ImageFilter
from pydantic import ValidationError

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Rendition, Resize
from services.imaging.encode import WEBP_EFFORT, encode
from services.imaging.isolation import ProcessPool
from services.imaging.limits import Limits
from services.imaging.ops import Context, Size, convert
from services.imaging.pipeline import run
from services.imaging.plan import ENCODE_MS_PER_MP, WEBP_EFFORT_COST, plan_pipeline
from services.imaging.service import ImagingProcessor, capabilities
from services.imaging.settings import ImagingSettings
from services.imaging.validation import validate_job, validate_pipeline
from services.runtime.errors import InvalidArgument

from . import samples
from .samples import decode, ops, scene

WEBP, JPEG, PNG, AVIF = image_pb2.WEBP, image_pb2.JPEG, image_pb2.PNG, image_pb2.AVIF
CTX = Context("operations[0].convert", 4096)


def photo(width: int = 480, height: int = 360) -> Image.Image:
    """Photo-like: the test scene under soft, uneven texture (smooth noise per channel). Pure
    noise would not do: libwebp's low efforts can win on it."""
    texture = Image.merge(
        "RGB",
        [
            Image.effect_noise((width, height), 60 + 10 * i)
            .convert("L")
            .filter(ImageFilter.GaussianBlur(2))
            for i in range(3)
        ],
    )
    return Image.blend(scene(width, height), texture, 0.35)


def png_photo() -> bytes:
    return samples.encode(photo(), "PNG")


# -- encoding ----------------------------------------------------------------------------------


def test_effort_0_is_larger_than_effort_6_and_both_decode_to_the_same_size() -> None:
    img = photo()
    fast = encode(img, WEBP, Convert(format=WEBP, effort=0))
    slow = encode(img, WEBP, Convert(format=WEBP, effort=6))
    assert len(fast) > len(slow) * 1.1
    assert decode(fast).size == decode(slow).size == img.size
    assert decode(fast).format == decode(slow).format == "WEBP"


def test_effort_applies_to_lossless_webp_too() -> None:
    img = scene(320, 240)
    fast = encode(img, WEBP, Convert(format=WEBP, lossless=True, effort=0))
    slow = encode(img, WEBP, Convert(format=WEBP, lossless=True, effort=6))
    assert len(fast) > len(slow)
    # Lossless either way: the pixels come back exactly.
    assert decode(fast).convert("RGB").tobytes() == img.tobytes()


def test_the_default_effort_applies_when_the_convert_sets_none() -> None:
    img = photo()
    unset = Convert(format=WEBP)
    assert encode(img, WEBP, unset) == encode(img, WEBP, Convert(format=WEBP, effort=WEBP_EFFORT))
    assert encode(img, WEBP, unset, webp_effort=0) == encode(
        img, WEBP, Convert(format=WEBP, effort=0)
    )
    # The Convert's own effort wins over the default, 0 included (the field has presence).
    assert encode(img, WEBP, Convert(format=WEBP, effort=0), webp_effort=6) == encode(
        img, WEBP, Convert(format=WEBP, effort=0)
    )


def test_max_bytes_searches_at_the_same_effort() -> None:
    img = photo(160, 120)

    def at(effort: int) -> set[bytes]:
        options = [Convert(format=WEBP, quality=q, effort=effort) for q in range(1, 81)]
        return {encode(img, WEBP, o) for o in options}

    limit = len(encode(img, WEBP, Convert(format=WEBP, quality=40, effort=0)))
    fitted = encode(img, WEBP, Convert(format=WEBP, max_bytes=limit, effort=0))
    assert len(fitted) <= limit
    assert fitted in at(0) and fitted not in at(6)
    by_default = encode(img, WEBP, Convert(format=WEBP, max_bytes=limit), webp_effort=0)
    assert by_default == fitted


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("effort", [0, 4, 6])
def test_effort_0_to_6_is_valid_for_webp(effort: int) -> None:
    for lossless in (False, True):
        op = Convert(format=WEBP, effort=effort, lossless=lossless)
        assert convert.validate(op, Size(10, 10), CTX) == Size(10, 10)


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Convert(format=WEBP, effort=7), "must be between 0 and 6"),
        (Convert(format=JPEG, effort=2), "applies to WEBP only, not JPEG"),
        (Convert(format=PNG, effort=0), "applies to WEBP only, not PNG"),  # 0 is set, too
        (Convert(format=AVIF, effort=6), "applies to WEBP only, not AVIF"),
    ],
)
def test_bad_efforts_name_the_field(op: Convert, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_pipeline(ops(Resize(width=10), op), None, Limits())
    assert err.value.violations[0].field == "operations[1].convert.effort"
    assert message in err.value.violations[0].description


def test_a_bad_effort_in_a_rendition_names_the_rendition() -> None:
    renditions = [
        Rendition(name="ok", operations=ops(Convert(format=WEBP, effort=1))),
        Rendition(name="bad", operations=ops(Resize(width=10), Convert(format=WEBP, effort=9))),
    ]
    with pytest.raises(InvalidArgument) as err:
        validate_job([], renditions, None, Limits())
    assert err.value.violations[0].field == "renditions[1].operations[1].convert.effort"


def test_list_operations_describes_effort_with_its_range() -> None:
    info = next(op for op in capabilities(Limits()).operations if op.name == "convert")
    effort = next(p for p in info.parameters if p.name == "effort")
    assert effort.type == "uint32"
    # From the proto: the rule (0..6) and the comment (WEBP only, the service's default).
    assert effort.constraint == "0..6"
    assert "WEBP" in effort.description and "PIXMESH_WEBP_EFFORT" in effort.description


# -- the setting -------------------------------------------------------------------------------


def test_the_setting_reads_pixmesh_webp_effort(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImagingSettings().webp_effort == WEBP_EFFORT == 4
    monkeypatch.setenv("PIXMESH_WEBP_EFFORT", "2")
    assert ImagingSettings().webp_effort == 2
    monkeypatch.setenv("PIXMESH_WEBP_EFFORT", "7")
    with pytest.raises(ValidationError):
        ImagingSettings()


def test_a_pipeline_encodes_at_the_default_effort() -> None:
    data = png_photo()
    pipeline = ops(Convert(format=WEBP))
    fast = run(data, pipeline, limits=Limits(), webp_effort=0).image
    usual = run(data, pipeline, limits=Limits(), webp_effort=4).image
    assert len(fast.data) > len(usual.data)
    assert usual.data == run(data, pipeline, limits=Limits()).image.data  # 4 unless told
    # Without a convert a WebP stays WebP, at the default effort too.
    webp = samples.encode(photo(), "WEBP", quality=90)
    assert len(run(webp, [], limits=Limits(), webp_effort=0).image.data) > len(
        run(webp, [], limits=Limits(), webp_effort=4).image.data
    )
    # A Convert's own effort is not overridden.
    pinned = ops(Convert(format=WEBP, effort=4))
    assert run(data, pinned, limits=Limits(), webp_effort=0).image.data == usual.data


def test_renditions_encode_at_the_default_effort() -> None:
    data = png_photo()
    renditions = [
        Rendition(name="default", operations=ops(Convert(format=WEBP))),
        Rendition(name="pinned", operations=ops(Convert(format=WEBP, effort=4))),
    ]
    results = dict(run(data, [], renditions, limits=Limits(), webp_effort=0).renditions)
    assert len(results["default"].data) > len(results["pinned"].data)


async def test_the_processor_passes_its_default_to_the_child(pool: ProcessPool) -> None:
    data = png_photo()
    pipeline = ops(Convert(format=WEBP))
    fast = (
        await ImagingProcessor(pool, Limits(), webp_effort=0).process(data, pipeline, None)
    ).image
    usual = (await ImagingProcessor(pool, Limits()).process(data, pipeline, None)).image
    assert len(fast.data) > len(usual.data)
    renditions = [Rendition(name="r", operations=pipeline)]
    fast_r = await ImagingProcessor(pool, Limits(), webp_effort=0).process(
        data, [], None, renditions=renditions
    )
    assert fast_r.renditions[0][1].data == fast.data


# -- planning cost -----------------------------------------------------------------------------

PHOTO = image_pb2.Image(image_id="img_1", format=image_pb2.JPEG, width=1000, height=1000)


def _cpu_ms(pipeline: list[Convert], **kwargs: int) -> int:
    return plan_pipeline(PHOTO, ops(*pipeline), Limits(), **kwargs).estimated_cost.cpu_ms


def test_the_cost_of_a_webp_encode_follows_the_effort() -> None:
    costs = [_cpu_ms([Convert(format=WEBP, effort=e)]) for e in range(7)]
    assert costs[0] < costs[2] < costs[4] < costs[6]
    # 1 MP: the encode is ENCODE_MS_PER_MP[WEBP] at effort 4, scaled by the table.
    webp = ENCODE_MS_PER_MP[WEBP]
    assert costs[4] - costs[0] == round(webp * (1 - WEBP_EFFORT_COST[0]))
    # Unset: the default, which the processor passes from the setting.
    assert _cpu_ms([Convert(format=WEBP)]) == costs[4]
    assert _cpu_ms([Convert(format=WEBP)], webp_effort=0) == costs[0]
    assert _cpu_ms([Convert(format=WEBP, effort=6)], webp_effort=0) == costs[6]
    # Other formats do not care.
    assert _cpu_ms([Convert(format=JPEG)], webp_effort=0) == _cpu_ms([Convert(format=JPEG)])


async def test_the_processor_plans_with_its_default(pool: ProcessPool) -> None:
    pipeline = ops(Convert(format=WEBP))
    fast = ImagingProcessor(pool, Limits(), webp_effort=0).plan(PHOTO, pipeline)
    usual = ImagingProcessor(pool, Limits()).plan(PHOTO, pipeline)
    assert fast.estimated_cost.cpu_ms < usual.estimated_cost.cpu_ms


def test_every_effort_has_a_cost() -> None:
    assert sorted(WEBP_EFFORT_COST) == list(range(7))
    assert WEBP_EFFORT_COST[WEBP_EFFORT] == 1.0
