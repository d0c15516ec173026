"""Decoded pixels in the few modes that every operation, model and encoder takes."""

from __future__ import annotations

from PIL import Image


def normalize_mode(img: Image.Image) -> Image.Image:
    """Bring any decoded mode to L, LA, RGB or RGBA, the modes every operation and encoder take.

    Palette images are expanded so that resampling filters work on colours, not indexes.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        # A colour-key transparency (PNG tRNS) becomes a real alpha channel.
        return img.convert("RGBA") if "transparency" in img.info else img
    if mode in ("LA", "RGBA"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in img.info
        alpha = alpha or (img.palette is not None and img.palette.mode == "RGBA")
        return img.convert("RGBA" if alpha else "RGB")
    if mode.startswith("I"):
        # 16/32-bit grey: scale to 8 bits (a plain convert would clip everything above 255).
        return img.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    if mode == "F":
        return img.convert("L")
    if mode == "La":
        return img.convert("LA")
    # CMYK, YCbCr, LAB, HSV, RGBX, RGBa.
    return img.convert("RGBA" if mode == "RGBa" else "RGB")
