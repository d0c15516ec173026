"""Non-local refinement of denoised chroma, guided by the whole denoised colour image.

A grey model denoises each opponent plane on its own, so the chroma planes never see the luma's
structure, which is where CBM3D wins: it groups similar blocks on the luma and filters the
chroma over the same groups. Per-plane figures on bench/denoise.py's colour photos
(`--only colour`, "Y / C1 / C2" column) show the self-ensembled 17-layer planes level with CBM3D
on Y and behind it on both chroma planes. This pass closes part of that gap: each chroma pixel
becomes a weighted mean of the denoised chroma over a (2R+1)² search window (non-local means,
Buades, Coll & Morel 2005), the weights coming from PATCH x PATCH patch distances measured on
all three denoised planes at once, a near-noise-free guide, so that pixels are averaged only
with pixels whose colour neighbourhood matches. The luma is left as it is (refining it too lost
on the tuning photos).

The parameters were chosen on bench/denoise.py's colour TUNING photos only (chelsea and rocket,
ten 256² crops, the self-ensembled 17-layer planes, σ = 15, 25, 50): mean gains of +0.28 /
+0.09 / +0.10 dB with R = 8, PATCH = 3 and WEIGHT = 0.049 (BENCHMARKS.md, issue 9, run 8).
It costs ~1.4 CPU-seconds per megapixel in numpy (a 12 MP photo: 16.6 CPU-s, 8.7 s on two
threads), in row strips (bounded memory, run in parallel on the executor), so it belongs with
the self-ensemble's best path, not the fast CPU default (service.py decides).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.inference import noise

SEARCH_RADIUS = 8
PATCH = 3
# A pixel pair whose patch distance (squared differences over the three orthonormal planes,
# averaged over the patch) is WEIGHT × σ² weighs e⁻¹ of an identical pair; σ per RGB channel.
WEIGHT = 0.049
STRIP_ROWS = 64
# What the report and the output key say ran (changing a parameter changes the bytes).
DESCRIPTION = f"nlm/r{SEARCH_RADIUS}/p{PATCH}/w{WEIGHT:g}"


def strips(height: int, rows: int = STRIP_ROWS) -> list[tuple[int, int]]:
    """Row ranges [start, end) that cover `height` rows."""
    return [(r, min(height, r + rows)) for r in range(0, height, rows)]


def chroma_rows(
    planes: Sequence[np.ndarray],
    sigma: float,
    start: int,
    end: int,
    *,
    radius: int = SEARCH_RADIUS,
    patch: int = PATCH,
    weight: float = WEIGHT,
) -> list[np.ndarray]:
    """Rows [start, end) of the refined C1 and C2 planes (other parameters: bench.denoise's
    sweep, `--only colour-choices`).

    `planes`: the denoised Y, C1 and C2 as the models see them (float32, 0..255, full
    resolution: noise.PLANE_SCALE and PLANE_OFFSET map them to the orthonormal planes); `sigma`:
    the noise per RGB channel before denoising. The result depends only on the rows asked for,
    not on how the image is cut into strips."""
    width = planes[0].shape[1]
    margin = radius + patch // 2
    window = [_rows(p, start, end, margin) for p in planes]
    rows = end - start
    half = patch // 2
    # Guides in orthonormal units (the offsets cancel in differences).
    guides = [w / np.float32(s) for w, s in zip(window, noise.PLANE_SCALE, strict=True)]
    inv = np.float32(-1.0 / max(weight * sigma * sigma, 1e-6))
    # Distances are needed for the core rows and `half` around them (the patch sums).
    lo, span_r, span_c = radius, rows + 2 * half, width + 2 * half
    acc = [np.zeros((rows, width), np.float32) for _ in range(2)]
    total = np.zeros((rows, width), np.float32)
    distance = np.empty((span_r, span_c), np.float32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            distance.fill(0)
            for g in guides:
                diff = (
                    g[lo + dy : lo + dy + span_r, lo + dx : lo + dx + span_c]
                    - g[lo : lo + span_r, lo : lo + span_c]
                )
                distance += diff * diff
            w = _patch_mean(distance, patch)
            w *= inv
            np.exp(w, out=w)
            total += w
            for a, target in zip(acc, window[1:], strict=True):
                a += w * target[margin + dy : margin + dy + rows, margin + dx : margin + dx + width]
    for a in acc:
        a /= total
    return acc


def _rows(plane: np.ndarray, start: int, end: int, margin: int) -> np.ndarray:
    """Rows [start - margin, end + margin) of the plane with `margin` columns each side, the
    image mirrored at its edges (numpy's "reflect"): a strip that needs rows beyond the image
    starts or ends at its edge, so mirroring the strip is mirroring the image."""
    height = plane.shape[0]
    top, bottom = max(0, start - margin), min(height, end + margin)
    pad = ((margin - (start - top), margin - (bottom - end)), (margin, margin))
    out: np.ndarray = np.pad(plane[top:bottom], pad, mode="reflect")
    return out


def _patch_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Means over the size x size windows that lie inside x (each side shrinks by size - 1);
    sums of shifted slices, exact where float32 running sums over a wide image would not be."""
    rows = x.shape[0] - size + 1
    out = x[:rows].copy()
    for i in range(1, size):
        out += x[i : i + rows]
    cols = x.shape[1] - size + 1
    summed = out[:, :cols].copy()
    for j in range(1, size):
        summed += out[:, j : j + cols]
    summed *= np.float32(1.0 / (size * size))
    return summed
