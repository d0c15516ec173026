"""BlurHash and ThumbHash encoders: the reference algorithms, vectorised with numpy.

BlurHash: https://github.com/woltapp/blurhash (Algorithm.md). ThumbHash:
https://github.com/evanw/thumbhash (js/thumbhash.js, rgbaToThumbHash). Both are a handful of
cosine coefficients, quantised; rounding follows the JavaScript references (half up) so the
strings match what other implementations produce for the same pixels.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

_BASE83: Final = (
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
)
# ThumbHash is defined for images of at most 100x100 pixels.
THUMBHASH_MAX_SIDE: Final = 100


def blurhash(rgb: npt.NDArray[np.uint8], x_components: int = 4, y_components: int = 3) -> str:
    """BlurHash of an (h, w, 3) sRGB array; use a small thumbnail (32 px is plenty)."""
    if not (1 <= x_components <= 9 and 1 <= y_components <= 9):
        raise ValueError("BlurHash takes 1..9 components per axis")
    height, width = rgb.shape[:2]
    linear = _srgb_to_linear(rgb.astype(np.float64) / 255.0)
    cos_x = np.cos(np.pi * np.arange(x_components)[:, None] * np.arange(width)[None, :] / width)
    cos_y = np.cos(np.pi * np.arange(y_components)[:, None] * np.arange(height)[None, :] / height)
    # factors[j, i] = sum over pixels of cos_y[j, y] * cos_x[i, x] * linear[y, x]
    factors = np.einsum("jy,ix,yxc->jic", cos_y, cos_x, linear) / (width * height)
    factors *= 2.0
    factors[0, 0] /= 2.0  # the DC term is not doubled
    flat = factors.reshape(-1, 3)
    dc, ac = flat[0], flat[1:]

    out = _base83((x_components - 1) + (y_components - 1) * 9, 1)
    if len(ac):
        quantised = int(max(0, min(82, math.floor(float(np.abs(ac).max()) * 166 - 0.5))))
        maximum = (quantised + 1) / 166
        out += _base83(quantised, 1)
    else:
        maximum = 1.0
        out += _base83(0, 1)
    r, g, b = (_linear_to_srgb(float(v)) for v in dc)
    out += _base83((r << 16) + (g << 8) + b, 4)
    for value in ac:
        q = [_quantise_ac(float(v) / maximum) for v in value]
        out += _base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return out


def thumbhash(rgba: npt.NDArray[np.uint8]) -> bytes:
    """ThumbHash of an (h, w, 4) RGBA array of at most 100x100 pixels."""
    h, w = rgba.shape[:2]
    if not (0 < w <= THUMBHASH_MAX_SIDE and 0 < h <= THUMBHASH_MAX_SIDE):
        raise ValueError(f"{w}x{h} does not fit in 100x100")
    pixels = rgba.reshape(-1, 4).astype(np.float64) / 255.0
    alpha = pixels[:, 3]
    total_alpha = float(alpha.sum())
    average = (alpha[:, None] * pixels[:, :3]).sum(axis=0)
    if total_alpha:
        average /= total_alpha
    has_alpha = total_alpha < w * h
    l_limit = 5 if has_alpha else 7
    lx = max(1, _round(l_limit * w / max(w, h)))
    ly = max(1, _round(l_limit * h / max(w, h)))

    # Composite onto the average colour, then split into luminance, yellow-blue, red-green.
    rgb = average[None, :] * (1 - alpha[:, None]) + alpha[:, None] * pixels[:, :3]
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    channels = {
        "l": ((r + g + b) / 3).reshape(h, w),
        "p": ((r + g) / 2 - b).reshape(h, w),
        "q": (r - g).reshape(h, w),
        "a": alpha.reshape(h, w),
    }
    l_dc, l_ac, l_scale = _thumb_channel(channels["l"], max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _thumb_channel(channels["p"], 3, 3)
    q_dc, q_ac, q_scale = _thumb_channel(channels["q"], 3, 3)

    header24 = (
        _round(63 * l_dc)
        | (_round(31.5 + 31.5 * p_dc) << 6)
        | (_round(31.5 + 31.5 * q_dc) << 12)
        | (_round(31 * l_scale) << 18)
        | (int(has_alpha) << 23)
    )
    landscape = w > h
    header16 = (
        (ly if landscape else lx)
        | (_round(63 * p_scale) << 3)
        | (_round(63 * q_scale) << 9)
        | (int(landscape) << 15)
    )
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    acs = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = _thumb_channel(channels["a"], 5, 5)
        out.append(_round(15 * a_dc) | (_round(15 * a_scale) << 4))
        acs.append(a_ac)
    nibbles = [_round(15 * f) for ac in acs for f in ac]
    nibbles += [0] * (len(nibbles) % 2)
    out += [lo | (hi << 4) for lo, hi in zip(nibbles[::2], nibbles[1::2], strict=True)]
    return bytes(out)


def _thumb_channel(channel: Floats, nx: int, ny: int) -> tuple[float, list[float], float]:
    h, w = channel.shape
    dc, ac = 0.0, []
    # The same products as `fy @ channel @ fx` per coefficient (evaluated left to right), with
    # each row's `fy @ channel` and each column basis computed once instead of per coefficient.
    fxs = [np.cos(np.pi / w * cx * (np.arange(w) + 0.5)) for cx in range(nx)]
    for cy in range(ny):
        fy = np.cos(np.pi / h * cy * (np.arange(h) + 0.5))
        row = fy @ channel
        cx = 0
        # A triangle of coefficients: cx * ny < nx * (ny - cy).
        while cx * ny < nx * (ny - cy):
            f = float(row @ fxs[cx]) / (w * h)
            if cx or cy:
                ac.append(f)
            else:
                dc = f
            cx += 1
    scale = max((abs(f) for f in ac), default=0.0)
    if scale:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return dc, ac, scale


def _round(value: float) -> int:
    # JavaScript's Math.round: halves go up (Python's round() would go to even).
    return math.floor(value + 0.5)


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - 1 - i)) % 83] for i in range(length))


def _srgb_to_linear(v: Floats) -> Floats:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(value: float) -> int:
    v = min(max(value, 0.0), 1.0)
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _quantise_ac(value: float) -> int:
    signed = math.copysign(abs(value) ** 0.5, value)
    return int(max(0, min(18, math.floor(signed * 9 + 9.5))))
