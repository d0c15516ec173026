"""Noise-level estimation and the colour planes the models work on.

σ is estimated with Donoho's wavelet MAD: the finest diagonal detail band of a 2-D Haar
transform is almost pure noise in natural images, so median(|HH|) / 0.6745 estimates the
standard deviation of additive white Gaussian noise (Donoho & Johnstone, 1994; the same rule as
scikit-image's `estimate_sigma`, which uses db2 instead of Haar).

LUMINANCE mode denoises Y of JPEG's full-range BT.601 YCbCr. Its inverse adds Y with weight 1
to each of R, G and B, so replacing Y by a denoised Y' is exactly RGB + (Y' − Y) per channel:
chroma is untouched and no Cb/Cr planes need to be kept. The colour default (AUTO, OPPONENT)
works on opponent planes, each with its own σ (below).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

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


# ---- colour: opponent planes and their noise ------------------------------------------------
#
# Independent noise in R, G and B (synthetic noise, sensor-raw data) is as strong in the chroma
# as in the luma, so denoising Y alone leaves most of it. The orthonormal opponent transform
# (the one CBM3D uses) decorrelates natural colours and keeps white noise white with the same
# σ in every plane, so each plane can be denoised on its own at its own σ. The planes the models
# see are that transform rescaled into 0..255: Y = (R+G+B)/3, C1 = (R−B)/2 + 127.5,
# C2 = (R−2G+B)/4 + 127.5. Plane σ values are reported on the orthonormal scale, i.e. as the σ
# of one RGB channel for independent noise.

OPPONENT = np.array(
    [
        [1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(3)],
        [1 / np.sqrt(2), 0.0, -1 / np.sqrt(2)],
        [1 / np.sqrt(6), -2 / np.sqrt(6), 1 / np.sqrt(6)],
    ],
    np.float64,
)
PLANES = ("Y", "C1", "C2")
# orthonormal plane k × PLANE_SCALE[k] + PLANE_OFFSET[k] = the 0..255 plane the model sees.
PLANE_SCALE = (1 / np.sqrt(3), 1 / np.sqrt(2), np.sqrt(6) / 4)
PLANE_OFFSET = (0.0, 127.5, 127.5)

# The block estimator: 12x12 Haar HH coefficients (24x24 pixels) per block; σ² from the lower
# QUANTILE of the block variances, which textured blocks do not reach, divided by that quantile
# of χ²₁₄₄/144 (0.8523, scipy.stats.chi2.ppf(0.1, 144) / 144) so that pure noise reads true.
# Block size and quantile were chosen on bench/denoise.py's tuning photos only: 8x8 and the
# 0.2 quantile read the luma up to 11% high at σ = 5 there (texture passing for noise), 12x12
# and 0.1 up to 6.6%, with every plane within 3% from σ = 10 to 50 either way.
BLOCK = 12
QUANTILE = 0.1
CHI2_QUANTILE = 0.8522529626725676
# Blocks whose clipped-noise variance is below this share of σ² (mostly saturated) are ignored.
MIN_CLIP_RATIO = 0.5
MAX_BLOCKS = 1 << 13  # enough blocks for a stable quantile; bigger images are subsampled

# Low noise: the block estimator reads fine texture as noise (+17% on a held-out photo's luma
# at σ = 5), so planes it puts below PCA_BELOW are re-estimated from the principal components
# of weak-texture patches (Liu, Tanaka & Okutomi, "Single-image noise level estimation for
# blind denoising", IEEE TIP 2013, for the patch selection; Chen, Zhu & Heng, "An efficient
# statistical method for image noise level estimation", ICCV 2015, for reading σ² off the
# eigenvalues): texture concentrates in a few principal directions of the patches, white noise
# spreads evenly over all of them. Patches are PCA_PATCH² pixels on a grid of at most
# PCA_MAX_PATCHES positions; a patch counts as weak texture when its gradient energy is below
# what pure noise of the current σ stays under with probability PCA_KEEP; patches whose
# channel means are within PCA_MARGIN σ of 0 or 255, or that hold a clipped pixel, are left
# out (clipping is the block estimator's business: this path only runs at low σ).
PCA_BELOW = 30.0
PCA_PATCH = 7
PCA_MAX_PATCHES = 1 << 16
PCA_KEEP = 0.99
PCA_MARGIN = 3.0
PCA_MIN_PATCHES = 256
PCA_ITERATIONS = 8


def opponent_planes(rgb: np.ndarray) -> list[np.ndarray]:
    """The three float32 planes (0..255) the models denoise: Y, C1, C2."""
    x = rgb.astype(np.float32)
    planes = []
    for k in range(3):
        w = (OPPONENT[k] * PLANE_SCALE[k]).astype(np.float32)
        planes.append(x @ w + np.float32(PLANE_OFFSET[k]))
    return planes


def from_opponent(planes: Sequence[np.ndarray]) -> np.ndarray:
    """The uint8 RGB image of three (denoised) opponent planes: rounded and clipped."""
    h, w = planes[0].shape
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, (1 << 20) // max(1, w))
    inverse = OPPONENT.T.astype(np.float32)  # orthonormal: the inverse is the transpose
    for r in range(0, h, step):
        orth = np.stack(
            [
                (p[r : r + step] - np.float32(PLANE_OFFSET[k])) / np.float32(PLANE_SCALE[k])
                for k, p in enumerate(planes)
            ],
            axis=-1,
        )
        rgb = orth @ inverse.T
        rgb += 0.5
        out[r : r + step] = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def estimate_opponent_sigmas(rgb: np.ndarray) -> tuple[float, float, float]:
    """σ of the noise in each orthonormal opponent plane of an (H, W, 3) uint8 image.

    Unlike `estimate_sigma`, it holds on 8-bit photos with texture and saturated areas: σ comes
    from the quieter blocks (a low quantile of block variances, corrected for that quantile),
    and each block's variance is divided by the share of σ² that clipping to 0..255 leaves at
    its brightness (a clipped Gaussian's variance, from a 6x6-pixel local mean), iterated from
    the uncorrected estimate. Big images are subsampled by rows of blocks. Planes that come out
    below PCA_BELOW are then re-estimated from weak-texture patches (`_pca_sigmas`).
    """
    block = _block_sigmas(rgb)
    low = [p for p in range(3) if block[p] < PCA_BELOW]
    if not low:
        return block
    refined = _pca_sigmas(rgb, low, block)
    out = [refined.get(p, block[p]) for p in range(3)]
    return out[0], out[1], out[2]


def _block_sigmas(rgb: np.ndarray) -> tuple[float, float, float]:
    """The block estimator (see `estimate_opponent_sigmas`)."""
    side = 2 * BLOCK
    h, w = rgb.shape[0] - rgb.shape[0] % side, rgb.shape[1] - rgb.shape[1] % side
    if h < side or w < side:
        return (0.0, 0.0, 0.0)
    rows, cols = h // side, w // side
    k = max(1, rows * cols // MAX_BLOCKS)
    x = rgb[:h, :w].reshape(rows, side, w, 3)[::k].reshape(-1, w, 3).astype(np.float32)
    rows = x.shape[0] // side
    # 2x2 pixel blocks: the Haar LL (local mean) per channel and HH per opponent plane.
    a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    ll = (a + b + c + d) * 0.25
    hh_rgb = (a - b - c + d) * 0.5
    padded = np.pad(ll, ((1, 1), (1, 1), (0, 0)), mode="edge")
    mu = np.zeros_like(ll)
    for i in range(3):
        for j in range(3):
            mu += padded[i : i + ll.shape[0], j : j + ll.shape[1]]
    mu /= np.float32(9)

    def per_block(v: np.ndarray) -> np.ndarray:
        out: np.ndarray = v.reshape(rows, BLOCK, cols, BLOCK).mean(axis=(1, 3))
        return out

    sigmas = []
    for p in range(3):
        weights = OPPONENT[p].astype(np.float32)
        variance = per_block(np.square(hh_rgb @ weights))
        sigma = float(np.sqrt(np.quantile(variance, QUANTILE) / CHI2_QUANTILE))
        for _ in range(3):
            s = max(sigma, 0.5)
            # The local mean of clipped pixels is pulled towards mid-grey (a white area reads
            # ~0.4σ darker): from it, clipping would look milder than it is, and the blocks
            # whose correction falls shortest are the ones the low quantile picks.
            ratio = per_block(_ratio_at_mean(mu, s) @ weights**2)
            ok = ratio > MIN_CLIP_RATIO
            if np.count_nonzero(ok) < 16:
                break
            sigma = float(np.sqrt(np.quantile(variance[ok] / ratio[ok], QUANTILE) / CHI2_QUANTILE))
        sigmas.append(sigma)
    return sigmas[0], sigmas[1], sigmas[2]


def rgb_sigma(plane_sigmas: Sequence[float]) -> float:
    """The σ per RGB channel that planes of an orthonormal transform add up to (their RMS)."""
    return float(np.sqrt(np.mean(np.square(plane_sigmas)))) if plane_sigmas else 0.0


def _phi(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.exp(-0.5 * z * z) / np.float32(np.sqrt(2 * np.pi))
    return out


def _ndtr(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7)."""
    x = np.abs(z) / np.float32(np.sqrt(2))
    t = 1 / (1 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))  # fmt: skip
    erf = 1 - poly * np.exp(-x * x)
    out: np.ndarray = 0.5 * (1 + np.where(z >= 0, erf, -erf))
    return out


def _clipped_mean(mu: np.ndarray, sigma: float) -> np.ndarray:
    """E[clip(μ + σZ, 0, 255)] for Z ~ N(0, 1), elementwise."""
    a = (0 - mu) / np.float32(sigma)
    b = (255 - mu) / np.float32(sigma)
    pa, pb, da, db = _ndtr(a), _ndtr(b), _phi(a), _phi(b)
    out: np.ndarray = mu + np.float32(sigma) * (a * pa + (da - db) + b * (1 - pb))
    return out


def _ratio_at_mean(mean: np.ndarray, sigma: float) -> np.ndarray:
    """`_clipped_variance_ratio` of the μ whose clipped mean E[clip(μ + σZ, 0, 255)] is `mean`
    (it rises strictly with μ): one interpolation in a table over μ from −4σ to 255 + 4σ."""
    grid = np.linspace(-4 * sigma, 255 + 4 * sigma, 1024, dtype=np.float32)
    # Then tabulated on the means themselves (0..255 in steps of 1/8): a lookup per cell.
    means = np.linspace(0, 255, 2041, dtype=np.float32)
    table = np.interp(means, _clipped_mean(grid, sigma), _clipped_variance_ratio(grid, sigma))
    index = np.clip(mean * np.float32(8) + np.float32(0.5), 0, 2040).astype(np.intp)
    out: np.ndarray = table.astype(np.float32)[index]
    return out


# ---- low noise: weak-texture patches (PCA_* above) --------------------------------------------


def _pca_sigmas(rgb: np.ndarray, planes: Sequence[int], block: Sequence[float]) -> dict[int, float]:
    """σ of the given opponent planes from weak-texture patches (PCA_* above); empty when the
    image has too few usable patches (then the block estimates stand)."""
    patches = _patch_grid(rgb, PCA_PATCH, PCA_MAX_PATCHES)
    if len(patches) < PCA_MIN_PATCHES:
        return {}
    margin = PCA_MARGIN * rgb_sigma(block)
    means = patches.mean(axis=(1, 2))
    valid = (
        (means.min(axis=1) >= margin)
        & (means.max(axis=1) <= 255 - margin)
        & (patches.min(axis=(1, 2, 3)) > 0)
        & (patches.max(axis=(1, 2, 3)) < 255)
    )
    if np.count_nonzero(valid) < PCA_MIN_PATCHES:
        return {}
    patches = patches[valid]
    limit = _texture_threshold(PCA_PATCH, PCA_KEEP)
    out: dict[int, float] = {}
    for p in planes:
        x = patches @ OPPONENT[p].astype(np.float32)  # (n, size, size), orthonormal scale
        energy = _gradient_energy(x)
        # From all patches (texture can lift it), then from the patches that look like noise
        # at the current σ, until σ settles (Liu et al.'s iteration) or too few are left
        # (texture everywhere: the last estimate, from more patches, stands).
        sigma = float(np.sqrt(_noise_variance(x)))
        for _ in range(PCA_ITERATIONS):
            weak = energy < limit * sigma * sigma
            if np.count_nonzero(weak) < PCA_MIN_PATCHES:
                break
            new = float(np.sqrt(_noise_variance(x[weak])))
            settled = abs(new - sigma) <= 0.002 * sigma
            sigma = new
            if settled:
                break
        out[p] = sigma
    return out


def _patch_grid(rgb: np.ndarray, size: int, most: int) -> np.ndarray:
    """(n, size, size, 3) float32 patches at most `most` positions on a regular grid."""
    h, w = rgb.shape[:2]
    ny, nx = h - size + 1, w - size + 1
    if ny < 1 or nx < 1:
        return np.empty((0, size, size, 3), np.float32)
    step = max(1, int(np.ceil(np.sqrt(ny * nx / most))))
    offsets = np.arange(size)
    rows = (np.arange(0, ny, step)[:, None] + offsets).ravel()
    cols = (np.arange(0, nx, step)[:, None] + offsets).ravel()
    grid = rgb[rows][:, cols].astype(np.float32)  # (rows·size, cols·size, 3)
    nr, nc = len(rows) // size, len(cols) // size
    out: np.ndarray = (
        grid.reshape(nr, size, nc, size, 3).transpose(0, 2, 1, 3, 4).reshape(-1, size, size, 3)
    )
    return out


def _gradient_energy(x: np.ndarray) -> np.ndarray:
    """Σ of squared horizontal and vertical neighbour differences inside each (n, s, s) patch."""
    out: np.ndarray = np.square(np.diff(x, axis=2)).sum(axis=(1, 2)) + np.square(
        np.diff(x, axis=1)
    ).sum(axis=(1, 2))
    return out


@functools.cache
def _texture_threshold(size: int, keep: float) -> float:
    """The `keep` quantile of the gradient energy of size² patches of unit white noise
    (simulated once, seeded: the energy is a weighted χ² with no handier closed form)."""
    z = np.random.default_rng(20261207).standard_normal((1 << 16, size, size), np.float32)
    return float(np.quantile(_gradient_energy(z), keep))


def _noise_variance(x: np.ndarray) -> float:
    """σ² of white noise in (n, s, s) patches from their covariance's eigenvalues (Chen et
    al. 2015): the longest tail of the smallest eigenvalues whose mean is also its median
    (as many above as below) is taken as the noise's, and σ² is that mean. Texture lifts only
    the leading eigenvalues, which the tail leaves out."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    flat -= flat.mean(axis=0)
    eig = np.linalg.eigvalsh(flat.T @ flat / max(1, len(flat) - 1))[::-1]  # descending
    for i in range(len(eig)):
        tail = eig[i:]
        tau = float(tail.mean())
        if np.count_nonzero(tail > tau) == np.count_nonzero(tail < tau):
            return max(tau, 0.0)
    return max(float(eig[-1]), 0.0)


def _clipped_variance_ratio(mu: np.ndarray, sigma: float) -> np.ndarray:
    """Var[clip(μ + σZ, 0, 255)] / σ² for Z ~ N(0, 1), elementwise."""
    a = (0 - mu) / np.float32(sigma)
    b = (255 - mu) / np.float32(sigma)
    pa, pb, da, db = _ndtr(a), _ndtr(b), _phi(a), _phi(b)
    mean = a * pa + (da - db) + b * (1 - pb)
    second = a * a * pa + (pb - pa) + a * da - b * db + b * b * (1 - pb)
    out: np.ndarray = np.maximum(second - mean * mean, 1e-6)
    return out
