"""The colour step: bring decoded pixels to sRGB, so that outputs look the same everywhere.

Outputs carry no profile by default (imgproxy's behaviour): an untagged image is read as sRGB by
browsers, so the pixels are converted from the embedded profile first. Convert.keep_icc keeps the
source profile and leaves the pixels alone instead. CMYK is never kept: the encoders all want
RGB, so CMYK goes through its own profile when it has one (or Pillow's naive formula when it has
none) and the CMYK profile is dropped.
"""

from __future__ import annotations

import io
import logging

from PIL import Image, ImageCms

log = logging.getLogger(__name__)

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(img: Image.Image, *, keep_icc: bool = False) -> Image.Image:
    """`img` (any decoded mode) converted to sRGB unless `keep_icc`; the result's `info` has an
    `icc_profile` only when it was kept."""
    icc = img.info.get("icc_profile")
    if img.mode == "CMYK":
        out = _transform(img, icc, "RGB") if icc else None
        out = out or img.convert("RGB")
        out.info = {k: v for k, v in img.info.items() if k != "icc_profile"}
        return out
    if not icc or keep_icc:
        return img
    out = _from_profile(img, icc) or same_pixels(img)
    out.info = {k: v for k, v in img.info.items() if k != "icc_profile"}
    return out


def same_pixels(img: Image.Image) -> Image.Image:
    """A new image over `img`'s pixels, not a copy of them (a 12 MP photo is 48 MB in Pillow):
    its `info` can differ from `img`'s, and nothing in the pipeline writes to an image it was
    given. A pixel map of a file (not made by the pipeline, which opens bytes) is copied, as it
    goes when the file closes."""
    return img.copy() if img.readonly else img._new(img.im)


def _from_profile(img: Image.Image, icc: bytes) -> Image.Image | None:
    """RGB(A) and grey images through their profile; None when there is nothing to do."""
    if img.mode in ("RGB", "RGBA"):
        return _transform(img, icc, img.mode)
    if img.mode in ("L", "LA"):
        # lcms maps grey to sRGB as RGB: bring it back to one channel (and keep alpha).
        grey = img.getchannel("L") if img.mode == "LA" else img
        rgb = _transform(grey, icc, "RGB")
        if rgb is None:
            return None
        out = rgb.convert("L")
        if img.mode == "LA":
            out.putalpha(img.getchannel("A"))
        return out
    return None  # palette, 16-bit...: rare with a profile, left as they are


def _transform(img: Image.Image, icc: bytes, mode: str) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "sRGB" in ImageCms.getProfileDescription(source) and img.mode == mode:
            return same_pixels(img)  # already sRGB: spare the transform
        out = ImageCms.profileToProfile(img, source, _SRGB, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        # A broken or unusual profile is common and not worth failing a job for: the pixels are
        # then read as sRGB, which is what a viewer ignoring the profile would do too.
        log.info("ignoring an unusable ICC profile: %r", exc)
        return None
    assert out is not None
    return out


def profile_for(icc: bytes | None, mode: str) -> bytes | None:
    """The kept profile `icc` if it still describes pixels of `mode`, else None.

    An operation may turn grey into colour (a duotone, a coloured pad) or colour into grey: a
    grey profile on RGB pixels (or the reverse) is invalid in PNG and misread elsewhere.
    """
    if not icc:
        return None
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    expected = "GRAY" if mode in ("L", "LA") else "RGB"
    if space != expected:
        log.info("dropping a %s profile from %s pixels", space, mode)
        return None
    return icc
