"""Presets and `convert.auto`: what a request turns into before it is planned and stored."""

import pytest

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.gateway.pipelines import accepted_formats, expand, parse_presets, resolve_auto
from services.gateway.settings import GatewaySettings
from services.runtime.errors import InvalidArgument

Op = operations_pb2.Operation
THUMB = [
    {"resize": {"width": 200, "height": 200, "mode": "FILL"}},
    {"convert": {"format": "WEBP"}},
]


def test_presets_parse_from_json_into_operations() -> None:
    presets = parse_presets({"thumb": THUMB})
    assert presets["thumb"] == [
        Op(resize=operations_pb2.Resize(width=200, height=200, mode=operations_pb2.Resize.FILL)),
        Op(convert=operations_pb2.Convert(format=image_pb2.WEBP)),
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"thumb": [{"resize": {"width": 200, "mode": "FILLL"}}]}, "'thumb', operation 0"),
        ({"thumb": [{"resize": {}}, {"blurr": {}}]}, "'thumb', operation 1"),
        ({"thumb": [{}]}, "empty operation"),
        ({"thumb": []}, "at least one operation"),
        ({"Bad Name": THUMB}, "names are 1..64"),
    ],
)
def test_a_bad_preset_stops_the_settings_with_the_step_at_fault(
    raw: dict[str, list[dict[str, object]]], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("PIXMESH_PRESETS", json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        GatewaySettings()


def test_settings_read_presets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("PIXMESH_PRESETS", json.dumps({"thumb": THUMB}))
    assert parse_presets(GatewaySettings().presets)["thumb"][1].convert.format == image_pb2.WEBP


def test_preset_operations_come_first_and_unknown_presets_are_rejected() -> None:
    presets = parse_presets({"thumb": THUMB})
    extra = Op(grayscale=operations_pb2.Grayscale())
    ops = expand(presets, "thumb", [extra])
    assert [op.WhichOneof("op") for op in ops] == ["resize", "convert", "grayscale"]
    assert expand(presets, "", [extra]) == [extra]
    with pytest.raises(InvalidArgument) as err:
        expand(presets, "thumbnail", [])
    assert err.value.reason == "UNKNOWN_PRESET"
    assert err.value.violations[0].field == "preset"


@pytest.mark.parametrize(
    ("accept", "source", "chosen"),
    [
        ("image/avif,image/webp,image/apng,*/*;q=0.8", image_pb2.JPEG, image_pb2.AVIF),
        ("image/webp,*/*", image_pb2.JPEG, image_pb2.WEBP),
        ("image/avif;q=0, image/webp;q=0.5", image_pb2.PNG, image_pb2.WEBP),
        ("*/*", image_pb2.PNG, image_pb2.PNG),  # a wildcard promises no format
        (None, image_pb2.JPEG, image_pb2.JPEG),
    ],
)
def test_auto_picks_avif_then_webp_then_the_input_format(
    accept: str | None, source: image_pb2.ImageFormat.ValueType, chosen: int
) -> None:
    ops = [
        Op(resize=operations_pb2.Resize(width=10)),
        Op(convert=operations_pb2.Convert(auto=True, quality=70)),
    ]
    resolved = resolve_auto(ops, accept, source)
    assert resolved[0] is ops[0]
    assert resolved[1].convert == operations_pb2.Convert(format=chosen, quality=70)  # type: ignore[arg-type]
    assert ops[1].convert.auto  # the request is not modified


@pytest.mark.parametrize("source", [image_pb2.BMP, image_pb2.ICO, image_pb2.HEIF])
def test_auto_for_an_input_pixmesh_cannot_write_is_left_to_imaging(
    source: image_pb2.ImageFormat.ValueType,
) -> None:
    """The input's format decides, and for a HEIF that depends on alpha, known after decoding:
    imaging's one rule (encode.choose_format) chooses, as for a job without a Convert."""
    op = Op(convert=operations_pb2.Convert(auto=True, quality=70))
    assert resolve_auto([op], "image/*", source) == [op]
    webp = resolve_auto([op], "image/webp", source)[0].convert
    assert (webp.format, webp.auto) == (image_pb2.WEBP, False)


def test_auto_with_a_format_is_rejected_and_headers_are_case_insensitive() -> None:
    with pytest.raises(InvalidArgument) as err:
        resolve_auto([Op(convert=operations_pb2.Convert(auto=True, format=image_pb2.PNG))], "", 1)
    assert err.value.violations[0].field == "operations[0].convert.format"
    assert accepted_formats("Image/WebP; q=1") == {image_pb2.WEBP}


@pytest.mark.parametrize(
    ("accept", "formats"),
    [
        ("image/webp;q=0.5,image/avif;q=1.000", {image_pb2.WEBP, image_pb2.AVIF}),
        ("image/webp;q=1.", {image_pb2.WEBP}),
        ("image/webp;q=0.", set()),
        ("image/webp; Q = 0.001", {image_pb2.WEBP}),
        ("image/webp;q=0, image/avif;q=0.000", set()),  # 0: not acceptable
        # RFC 9110 weights are 0..1 with at most 3 decimals: another weight drops its range
        ("image/webp;q=-1", set()),
        ("image/webp;q=2", set()),
        ("image/webp;q=1.5,image/avif", {image_pb2.AVIF}),
        ("image/webp;q=0.0001", set()),
        ("image/webp;q=1.001", set()),
        ("image/webp;q=", set()),
        ("image/webp;q=high", set()),
        ("image/webp;q=1e-1", set()),
    ],
)
def test_accept_weights_out_of_range_drop_their_media_range(accept: str, formats: set[int]) -> None:
    assert accepted_formats(accept) == formats
