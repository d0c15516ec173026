import io

from PIL import Image, ImageCms

from services.imaging.colour import to_srgb

from .samples import SRGB_BLUE, SRGB_GREEN, SRGB_RED, encode, icc_profile, scene

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_an_srgb_image_keeps_its_pixels_and_loses_its_profile() -> None:
    src = opened(encode(scene(), "PNG", icc_profile=SRGB))
    out = to_srgb(src)
    assert "icc_profile" not in out.info and out.tobytes() == src.tobytes()
    assert src.info["icc_profile"] == SRGB  # the input is left as it was


def test_another_profile_converts_and_leaves_the_input_alone() -> None:
    swapped = icc_profile("swapped", SRGB_GREEN, SRGB_RED, SRGB_BLUE)
    src = opened(encode(scene(), "PNG", icc_profile=swapped))
    out = to_srgb(src)
    assert "icc_profile" not in out.info and out.tobytes() != src.tobytes()
    assert src.info["icc_profile"] == swapped


def test_keep_icc_returns_the_image_as_it_is() -> None:
    src = opened(encode(scene(), "PNG", icc_profile=SRGB))
    assert to_srgb(src, keep_icc=True) is src
