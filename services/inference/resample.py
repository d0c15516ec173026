"""Planes denoised at reduced resolution (OPPONENT's chroma on a CPU): reduced by block means,
brought back guided by the full-resolution denoised luma.

Bilinear upsampling alone leaves every chroma edge as wide as the reduced grid's pixels. The
chroma of natural photos mostly changes where the luma does, so the way back borrows the
luma's detail: the fast guided filter's local linear model (He & Sun, "Fast Guided Filter",
2015: chroma ≈ a·Y + b fitted on the reduced grid, the coefficients averaged over the windows
around each point and brought back bilinearly) in a detail-transfer form: the result is the
bilinear plane plus `a` times the luma detail the reduction lost (Y minus its own reduced copy
brought back). Where the chroma does not follow the luma, `a` ≈ 0 and the bilinear plane is
kept, so colour is never smoothed beyond what the reduction did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# The local linear model: windows of (2·GUIDE_RADIUS + 1)² reduced-grid pixels, slope
# cov / (var + GUIDE_EPS) with variances in 0..255 units². Chosen on bench/denoise.py's colour
# tuning photos (BENCHMARKS.md, issue 9, run 4).
GUIDE_RADIUS = 2
GUIDE_EPS = 4.0


def downscale(plane: np.ndarray, n: int) -> np.ndarray:
    """Mean of n×n blocks (the edge repeated to a multiple of n)."""
    h, w = plane.shape
    ph, pw = -h % n, -w % n
    if ph or pw:
        plane = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    out: np.ndarray = plane.reshape((h + ph) // n, n, (w + pw) // n, n).mean(axis=(1, 3))
    return out.astype(np.float32)


def upscale(plane: np.ndarray, n: int, height: int, width: int) -> np.ndarray:
    """Bilinear back to n times the size (pixel centres aligned), cropped to height×width
    (float32, read-only)."""
    size = (plane.shape[1] * n, plane.shape[0] * n)
    big = np.asarray(Image.fromarray(plane, "F").resize(size, Image.Resampling.BILINEAR))
    return big[:height, :width]


@dataclass(frozen=True)
class Guide:
    """A full-resolution plane (the denoised luma) as a guide for planes reduced by n."""

    n: int
    radius: int
    low: np.ndarray  # float64: the guide reduced as the planes were (`downscale`)
    mean: np.ndarray  # float64: its local means on the reduced grid
    var: np.ndarray  # float64: its local variances there
    detail: np.ndarray  # float32, full size: the guide minus its reduced copy brought back


def guide(luma: np.ndarray, n: int, radius: int = GUIDE_RADIUS) -> Guide:
    h, w = luma.shape
    low32 = downscale(luma, n)
    low = low32.astype(np.float64)
    mean = box(low, radius)
    var = box(low * low, radius) - mean * mean
    detail = luma.astype(np.float32) - upscale(low32, n, h, w)
    return Guide(n, radius, low, mean, var, detail)


def upscale_guided(plane: np.ndarray, by: Guide, eps: float = GUIDE_EPS) -> np.ndarray:
    """`plane` (reduced by `by.n`) at the guide's size (float32): bilinear, plus the guide's
    detail times the plane's local slope against the guide."""
    h, w = by.detail.shape
    p = plane.astype(np.float64)
    cov = box(by.low * p, by.radius) - by.mean * box(p, by.radius)
    slope = box(cov / (by.var + eps), by.radius).astype(np.float32)
    out = upscale(np.ascontiguousarray(plane, np.float32), by.n, h, w).copy()
    big = upscale(slope, by.n, h, w).copy()
    big *= by.detail
    out += big
    return out


def box(x: np.ndarray, r: int) -> np.ndarray:
    """Means over the (2r+1)² window around each point, the edges repeated (float64)."""
    k = 2 * r + 1
    padded = np.pad(x.astype(np.float64, copy=False), r, mode="edge")
    c = np.zeros((padded.shape[0] + 1, padded.shape[1]), np.float64)
    np.cumsum(padded, axis=0, out=c[1:])
    rows = c[k:] - c[:-k]
    c = np.zeros((rows.shape[0], rows.shape[1] + 1), np.float64)
    np.cumsum(rows, axis=1, out=c[:, 1:])
    out: np.ndarray = (c[:, k:] - c[:, :-k]) / (k * k)
    return out
