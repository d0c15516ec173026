"""Convert's encoder options: accepted for the formats they apply to, rejected elsewhere."""

import pytest

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Convert
from services.imaging.errors import MAX_BYTES_UNREACHABLE
from services.imaging.limits import Limits
from services.imaging.ops import Context, Size, convert
from services.imaging.pipeline import run
from services.runtime.errors import InvalidArgument

from .samples import decode, encode, ops, scene, validated

CTX = Context("operations[0].convert", 4096)
JPEG, PNG, WEBP, AVIF, GIF, TIFF = (
    image_pb2.JPEG,
    image_pb2.PNG,
    image_pb2.WEBP,
    image_pb2.AVIF,
    image_pb2.GIF,
    image_pb2.TIFF,
)


@pytest.mark.parametrize(
    "op",
    [
        Convert(format=JPEG, quality=70, progressive=True, max_bytes=10_000),
        Convert(format=GIF, progressive=True, colors=16),
        Convert(format=WEBP, lossless=True),
        Convert(format=WEBP, quality=50, max_bytes=1),
        Convert(format=PNG, compression_level=0, colors=256, lossless=True, quality=90),
        Convert(format=AVIF, speed=0, max_bytes=5000, keep_icc=True, keep_copyright=True),
        Convert(format=TIFF, keep_icc=True, keep_copyright=True),
    ],
)
def test_valid_options(op: Convert) -> None:
    assert convert.validate(op, Size(10, 10), CTX) == Size(10, 10)


@pytest.mark.parametrize(
    ("op", "field"),
    [
        (Convert(format=PNG, progressive=True), "progressive"),
        (Convert(format=JPEG, lossless=True), "lossless"),
        (Convert(format=AVIF, lossless=True), "lossless"),
        (Convert(format=WEBP, compression_level=5), "compression_level"),
        (Convert(format=PNG, compression_level=10), "compression_level"),
        (Convert(format=JPEG, colors=16), "colors"),
        (Convert(format=PNG, colors=1), "colors"),
        (Convert(format=PNG, colors=257), "colors"),
        (Convert(format=JPEG, speed=5), "speed"),
        (Convert(format=AVIF, speed=11), "speed"),
        (Convert(format=PNG, max_bytes=1000), "max_bytes"),
        (Convert(format=WEBP, lossless=True, max_bytes=1000), "max_bytes"),
        (Convert(format=GIF, keep_icc=True), "keep_icc"),
        (Convert(format=GIF, keep_copyright=True), "keep_copyright"),
    ],
)
def test_options_that_do_not_apply_are_rejected(op: Convert, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validated(convert.validate, op, Size(10, 10), CTX)
    assert err.value.violations[0].field == f"operations[0].convert.{field}"


def test_max_bytes_through_the_pipeline() -> None:
    data = encode(scene(640, 480), "PNG")
    fitted = run(data, ops(Convert(format=JPEG, max_bytes=8000)), limits=Limits()).image
    assert len(fitted.data) <= 8000 and decode(fitted.data).size == (640, 480)
    with pytest.raises(InvalidArgument) as err:
        run(data, ops(Convert(format=JPEG, max_bytes=300)), limits=Limits())
    assert err.value.reason == MAX_BYTES_UNREACHABLE
    assert err.value.violations[0].field == "operations[0].convert.max_bytes"
