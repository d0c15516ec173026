"""A plain numpy DnCNN forward pass, straight from the flax parameters.

This is the yardstick the ONNX conversion is checked against, so it shares nothing with the
converter: it reads the unfolded flax tree (conv kernels in HWIO layout, batch-norm scale, bias,
running mean and variance), pads circularly like flax's `padding="CIRCULAR"`, works in NHWC and
float64, and applies batch norm as flax does at inference time. It is slow and only meant for
small arrays (tests, conversion checks).

Network (scico's DnCNNNet): conv_start → ReLU → (depth-2) × [conv → BN → ReLU] → conv_end, no
conv biases; output = input − net(input). The "N" variants take [image, σ-plane] as two channels
and the first output channel is the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BN_EPSILON = 1e-5  # scico's DnCNNNet: BatchNorm(epsilon=1e-5)

Params = Mapping[str, Any]


def block_names(params: Params) -> list[str]:
    """The ConvBNBlock_<i> names in network order (numerically, not as strings sort)."""
    blocks = [k for k in params if k.startswith("ConvBNBlock_")]
    return sorted(blocks, key=lambda k: int(k.rsplit("_", 1)[1]))


def conv_circular(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'Same' cross-correlation with circular padding. x: (H, W, Cin); kernel: (kh, kw, Cin, Cout)."""
    kh, kw, cin, cout = kernel.shape
    pad = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0))
    padded = np.pad(x, pad, mode="wrap")
    windows = sliding_window_view(padded, (kh, kw), axis=(0, 1))  # (H, W, Cin, kh, kw)
    h, w = x.shape[:2]
    cols = windows.reshape(h * w, cin * kh * kw)
    weights = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
    out: np.ndarray = (cols @ weights).reshape(h, w, cout)
    return out


def forward(variables: Params, image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Denoise one (H, W) image on the [0, 1] scale; `sigma` (also [0, 1]) for the N variants."""
    params, stats = variables["params"], variables["batch_stats"]
    x = np.asarray(image, dtype=np.float64)[..., None]
    if sigma is not None:
        x = np.concatenate([x, np.full_like(x, sigma)], axis=-1)
    base = x
    y = np.maximum(conv_circular(x, np.asarray(params["conv_start"]["kernel"], np.float64)), 0)
    for name in block_names(params):
        y = conv_circular(y, np.asarray(params[name]["Conv_0"]["kernel"], np.float64))
        bn, running = params[name]["BatchNorm_0"], stats[name]["BatchNorm_0"]
        mean = np.asarray(running["mean"], np.float64)
        var = np.asarray(running["var"], np.float64)
        y = (y - mean) / np.sqrt(var + BN_EPSILON)
        y = y * np.asarray(bn["scale"], np.float64) + np.asarray(bn["bias"], np.float64)
        y = np.maximum(y, 0)
    y = conv_circular(y, np.asarray(params["conv_end"]["kernel"], np.float64))
    out: np.ndarray = (base - y)[..., 0]
    return out
