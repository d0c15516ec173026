"""Noise-level estimation and the colour planes the models work on.

σ is estimated with Donoho's wavelet MAD: the finest diagonal detail band of a 2-D Haar
transform is almost pure noise in natural images, so median(|HH|) / 0.6745 estimates the
standard deviation of additive white Gaussian noise (Donoho & Johnstone, 1994; the same rule as
scikit-image's `estimate_sigma`, which uses db2 instead of Haar).

Colour images are denoised on luminance by default: Y of JPEG's full-range BT.601 YCbCr. Its
inverse adds Y with weight 1 to each of R, G and B, so replacing Y by a denoised Y' is exactly
RGB + (Y' − Y) per channel: chroma is untouched and no Cb/Cr planes need to be kept.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 0.6745  # the median of |N(0, 1)|
# Enough Haar coefficients for a stable median (relative error well under 1%), so the cost and
# memory of the estimate stop growing with the image.
MAX_COEFFICIENTS = 1 << 20
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def estimate_sigma(plane: np.ndarray) -> float:
    """σ of white Gaussian noise in a 2-D plane, on the plane's own scale (0 if too small)."""
    h, w = plane.shape
    h, w = h - h % 2, w - w % 2
    if h < 2 or w < 2:
        return 0.0
    # Take every k-th row of 2x2 blocks on big planes; the median needs no more.
    k = max(1, (h // 2) * (w // 2) // MAX_COEFFICIENTS)
    rows = plane[:h].reshape(h // 2, 2, -1)[::k]
    p = rows[:, :, :w].astype(np.float32)
    hh = (p[:, 0, 0::2] - p[:, 0, 1::2] - p[:, 1, 0::2] + p[:, 1, 1::2]) * 0.5
    return float(np.median(np.abs(hh)) / MAD_TO_SIGMA)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Y (float32, 0..255) of an (H, W, 3) uint8 image."""
    y = np.empty(rgb.shape[:2], np.float32)
    step = _rows_per_chunk(rgb)
    for r in range(0, rgb.shape[0], step):  # row chunks keep the float temporaries small
        y[r : r + step] = rgb[r : r + step].astype(np.float32) @ LUMA
    return y


def _rows_per_chunk(image: np.ndarray) -> int:
    return max(1, (1 << 20) // max(1, int(image.shape[1])))


def replace_luminance(rgb: np.ndarray, y_old: np.ndarray, y_new: np.ndarray) -> np.ndarray:
    """The uint8 image whose luminance is `y_new`: RGB + (Y' − Y), rounded and clipped."""
    out = np.empty_like(rgb)
    step = _rows_per_chunk(rgb)  # row chunks keep temporaries small
    for r in range(0, rgb.shape[0], step):
        delta = (y_new[r : r + step] - y_old[r : r + step])[..., None]
        out[r : r + step] = np.clip(rgb[r : r + step] + delta + 0.5, 0, 255).astype(np.uint8)
    return out
