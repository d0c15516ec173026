"""Convert scico's pretrained DnCNN weights (flax msgpack) into the ONNX model repository.

    .venv/bin/python -m services.inference.convert --download            # pip download scico
    .venv/bin/python -m services.inference.convert --wheel scico-0.0.7-py3-none-any.whl

The scico wheel (BSD-3-Clause) ships `scico/data/flax/dncnn{6,17}{L,M,H,N}.mpk`. scico itself
needs jax, so the wheel is only read as a zip file: this needs numpy, msgpack and onnx (the dev
extra), never jax. For every variant it writes `<out>/<name>/<version>/{model.onnx,config.json}`, then
the repository's MANIFEST.json and the licence notice, and checks each ONNX model with
onnxruntime against the separate numpy forward pass (`services.inference.reference`) on the
original, unfolded weights; a model that differs by more than `TOLERANCE` is not written.
With `--golden DIR` it also saves that check's input and reference output, so the unit tests
can re-check the committed models without the wheel.

The graph: image [N,1,H,W] on [0,1] (plus sigma [N] on [0,1] for the N variants, broadcast to a
second input channel inside the graph); every 3x3 convolution keeps flax's circular padding
(two Slice+Concat pairs: supported by every onnxruntime execution provider, unlike Pad's
"wrap" mode on some); batch norm is folded into the convolution's weights and bias; the output
is image − net(image), first channel only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.inference import reference

SCICO_VERSION = "0.0.7"
WHEEL_DATA = "scico/data/flax"
OPSET = 17
IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; 8 keeps older runtimes working too
TOLERANCE = 1e-4  # max |onnx - reference| on [0,1] images (float32 vs float64 accumulation)
MODEL_VERSION = "1"
INT64_MAX = np.iinfo(np.int64).max
DEFAULT_OUT = Path(__file__).parent / "models"


@dataclass(frozen=True)
class Variant:
    """One scico model. `trained_sigma` is on the [0,1] scale, as scico documents it."""

    file: str
    depth: int
    trained_sigma: float | None  # None: takes sigma as an input (the N variants)

    @property
    def name(self) -> str:
        suffix = "n" if self.trained_sigma is None else self.file[-5].lower()
        return f"dncnn{self.depth}-{suffix}"


# Trained noise levels from scico/data/flax/README.rst: L 0.06, M 0.10, H 0.20 on [0, 1];
# N was trained with sigma in 0..0.2.
VARIANTS = tuple(
    Variant(f"dncnn{depth}{level}.mpk", depth, sigma)
    for depth in (6, 17)
    for level, sigma in (("L", 0.06), ("M", 0.10), ("H", 0.20), ("N", None))
)
N_SIGMA_MAX = 0.2

# The noise levels (0..255) `auto` uses each model for; (0, 0): never picked by `auto` (still
# usable by name). Chosen per depth on the tuning photos of bench/denoise.py (never on its
# held-out photos; `python -m bench.denoise --only tune` prints the table): the 6-layer
# σ-input model wins below σ≈30 and the 6-layer H model above; among 17-layer models the
# σ-input one wins at low noise, M (scaled to the σ) in the middle and H at high noise.
AUTO_BANDS: dict[str, tuple[float, float]] = {
    "dncnn6-l": (0.0, 0.0),
    "dncnn6-m": (0.0, 0.0),
    "dncnn6-h": (30.0, 255.0),
    "dncnn6-n": (0.0, 30.0),
    "dncnn17-l": (0.0, 0.0),
    "dncnn17-m": (12.0, 45.0),
    "dncnn17-h": (45.0, 255.0),
    "dncnn17-n": (0.0, 12.0),
}

# σ-input models: the σ they are given is multiplied by this on a colour image's full-resolution
# opponent chroma planes (ModelConfig.gain; the int8 copies have their own, quantize.py). The
# chroma of natural photos is smoother than the grey images the models learnt: fed the plane's
# own σ they under-denoise it. Chosen on the colour tuning photos (chelsea, rocket, whole, one
# pass through the service's planes; gains 1.0 / 1.1 / 1.2 / 1.3, the best mean over the σ at
# which `auto` gives each model chroma planes): dncnn17-n (planes below σ 12: images at σ = 10,
# 15) +0.38 / +0.25 dB at 1.2; dncnn6-n (planes below 30: σ = 10, 15, 25) +0.12 / +0.15 / +0.12
# at 1.1, where 1.2 lost 0.08 at σ = 25; the luma is best at 1.0 (BENCHMARKS.md, issue 9, run 5).
PLANE_SIGMA_GAINS: dict[str, dict[str, float]] = {
    "dncnn6-n": {"C1": 1.1, "C2": 1.1},
    "dncnn17-n": {"C1": 1.2, "C2": 1.2},
}
# A model's version changes when its bytes or anything that changes its output (config.json's
# gains) changes, so that output keys (model@version) never name other bytes: version 2 of the
# σ-input models adds PLANE_SIGMA_GAINS (same ONNX files).
MODEL_VERSIONS = {"dncnn6-n": "2", "dncnn17-n": "2"}


def model_version(name: str) -> str:
    return MODEL_VERSIONS.get(name, MODEL_VERSION)


# ---- reading flax msgpack -----------------------------------------------------------------------


def read_flax_msgpack(data: bytes) -> dict[str, Any]:
    """flax.serialization.msgpack_restore without flax: ndarrays are msgpack ext type 1."""
    import msgpack

    def ext_hook(code: int, payload: bytes) -> Any:
        if code == 1:  # (shape, dtype name, raw buffer)
            shape, dtype, buffer = msgpack.unpackb(payload)
            return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()
        raise ValueError(f"unsupported msgpack extension {code} in a flax file")

    tree: dict[str, Any] = msgpack.unpackb(data, ext_hook=ext_hook, strict_map_key=False)
    return tree


# ---- building the ONNX graph ----------------------------------------------------------------


def fold_batch_norm(
    kernel: np.ndarray, bn: Mapping[str, np.ndarray], stats: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Conv (no bias, HWIO) followed by inference-mode BN → one conv with weight (OIHW) and bias."""
    gain = bn["scale"].astype(np.float64) / np.sqrt(
        stats["var"].astype(np.float64) + reference.BN_EPSILON
    )
    weight = kernel.astype(np.float64).transpose(3, 2, 0, 1) * gain[:, None, None, None]
    bias = bn["bias"].astype(np.float64) - stats["mean"].astype(np.float64) * gain
    return weight.astype(np.float32), bias.astype(np.float32)


class _Graph:
    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        self.initializers.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.fresh(stem)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def circular_pad(self, x: str, radius: int) -> str:
        """Wrap `radius` rows/columns around H and W (flax padding="CIRCULAR")."""
        r = np.array([radius], np.int64)
        for axis in (2, 3):
            ax = self.const("axis", np.array([axis], np.int64))
            head = self.node(
                "Slice",
                [x, self.const("s", -r), self.const("e", np.array([INT64_MAX])), ax],
                "tail",
            )
            tail = self.node(
                "Slice", [x, self.const("s", np.array([0])), self.const("e", r), ax], "head"
            )
            x = self.node("Concat", [head, x, tail], "wrap", axis=axis)
        return x

    def conv(self, x: str, weight: np.ndarray, bias: np.ndarray | None, relu: bool) -> str:
        radius = weight.shape[-1] // 2
        inputs = [self.circular_pad(x, radius), self.const("w", weight)]
        if bias is not None:
            inputs.append(self.const("b", bias))
        y = self.node("Conv", inputs, "conv", kernel_shape=list(weight.shape[-2:]))
        return self.node("Relu", [y], "relu") if relu else y


def build_onnx(variables: Mapping[str, Any], name: str, sigma_input: bool) -> Any:
    """The ONNX model of one scico DnCNN (see the module docstring for its interface)."""
    from onnx import TensorProto, checker, helper

    params, stats = variables["params"], variables["batch_stats"]
    g = _Graph()
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    x = "image"
    if sigma_input:
        inputs.append(helper.make_tensor_value_info("sigma", TensorProto.FLOAT, ["N"]))
        plane = g.node("Reshape", ["sigma", g.const("shape", np.array([-1, 1, 1, 1]))], "sigma4")
        plane = g.node("Expand", [plane, g.node("Shape", ["image"], "shape")], "sigma_plane")
        x = g.node("Concat", ["image", plane], "with_sigma", axis=1)
    start = params["conv_start"]["kernel"].transpose(3, 2, 0, 1).astype(np.float32)
    y = g.conv(x, start, None, relu=True)
    for block in reference.block_names(params):
        w, b = fold_batch_norm(
            params[block]["Conv_0"]["kernel"],
            params[block]["BatchNorm_0"],
            stats[block]["BatchNorm_0"],
        )
        y = g.conv(y, w, b, relu=True)
    end = params["conv_end"]["kernel"].transpose(3, 2, 0, 1).astype(np.float32)
    y = g.conv(y, end, None, relu=False)
    if sigma_input:  # the image is channel 0 of the two the network predicts
        zero, one = g.const("s", np.array([0])), g.const("e", np.array([1]))
        y = g.node("Slice", [y, zero, one, g.const("axis", np.array([1]))], "noise")
    g.nodes.append(helper.make_node("Sub", ["image", y], ["denoised"], name="residual"))
    output = helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["N", 1, "H", "W"])
    graph = helper.make_graph(g.nodes, name, inputs, [output], g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="pixmesh-convert",
        doc_string=f"{name}: DnCNN from scico {SCICO_VERSION} (BSD-3-Clause), converted to ONNX",
    )
    checker.check_model(model, full_check=True)
    return model


# ---- checking against the reference --------------------------------------------------------


def check_input(sigma: float, seed: int = 0) -> np.ndarray:
    """A small odd-sized test image: smooth structure plus Gaussian noise, on [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:29, 0:37] / 10.0
    clean = 0.5 + 0.3 * np.sin(xx * 1.3) * np.cos(yy * 0.7) + 0.15 * (xx > 2.0)
    noisy: np.ndarray = (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)
    return noisy


def max_error(model_bytes: bytes, variables: Mapping[str, Any], sigma: float | None) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    image = check_input(sigma or 0.1)
    feeds = {"image": image[None, None]}
    if sigma is not None:
        feeds["sigma"] = np.array([sigma], np.float32)
    got = session.run(None, feeds)[0][0, 0]
    want = reference.forward(variables, image, sigma)
    return float(np.abs(got - want).max())


# ---- the repository ---------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_config(v: Variant, onnx_bytes: bytes, source_sha: str, error: float) -> dict[str, Any]:
    image_spec = {
        "name": "image",
        "datatype": "FP32",
        "shape": [-1, 1, -1, -1],
        "description": "grey image, NCHW, on the [0, 1] scale",
    }
    inputs = [image_spec]
    if v.trained_sigma is None:
        inputs.append(
            {
                "name": "sigma",
                "datatype": "FP32",
                "shape": [-1],
                "description": "noise standard deviation per image, on the [0, 1] scale",
            }
        )
        trained: float | None = None
        kind = f"takes the noise level as an input (trained for sigma 0..{N_SIGMA_MAX * 255:g})"
    else:
        trained = round(v.trained_sigma * 255, 2)
        kind = f"blind, trained at sigma {trained:g}"
    config: dict[str, Any] = {
        "name": v.name,
        "version": model_version(v.name),
        "platform": "onnxruntime_onnx",
        "file": "model.onnx",
        "sha256": sha256(onnx_bytes),
        "description": f"DnCNN, {v.depth} layers, {kind} (0..255 scale)",
        "architecture": {"family": "dncnn", "depth": v.depth, "features": 64, "kernel": 3},
        # Output pixels depend on inputs at most this far away (one pixel per 3x3 layer).
        "receptive_radius": v.depth,
        "sigma_input": v.trained_sigma is None,
        "trained_sigma": trained,
        "sigma_range": list(AUTO_BANDS[v.name]),
        "value_range": [0.0, 1.0],
        "inputs": inputs,
        "outputs": [{"name": "denoised", "datatype": "FP32", "shape": [-1, 1, -1, -1]}],
        "source": {
            "package": f"scico=={SCICO_VERSION}",
            "file": f"{WHEEL_DATA}/{v.file}",
            "sha256": source_sha,
            "license": "BSD-3-Clause",
        },
        "conversion": {
            "opset": OPSET,
            "batch_norm": "folded",
            "padding": "circular",
            "max_abs_error_vs_numpy_reference": error,
        },
    }
    if gains := PLANE_SIGMA_GAINS.get(v.name):
        config["plane_sigma_gains"] = dict(sorted(gains.items()))
    return config


def convert(wheel: Path, out: Path, golden: Path | None = None) -> list[dict[str, Any]]:
    manifest: list[dict[str, Any]] = []
    with zipfile.ZipFile(wheel) as zf:
        licence = zf.read(f"scico-{SCICO_VERSION}.dist-info/licenses/LICENSE").decode()
        for v in VARIANTS:
            raw = zf.read(f"{WHEEL_DATA}/{v.file}")
            variables = read_flax_msgpack(raw)
            model = build_onnx(variables, v.name, sigma_input=v.trained_sigma is None)
            onnx_bytes = model.SerializeToString()
            sigma = None if v.trained_sigma is not None else 0.1
            error = max_error(onnx_bytes, variables, sigma)
            if not error <= TOLERANCE:
                raise SystemExit(f"{v.name}: ONNX differs from the reference by {error:.2e}")
            config = model_config(v, onnx_bytes, sha256(raw), error)
            version = model_version(v.name)
            drop_other_versions(out / v.name, version)
            folder = out / v.name / version
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.onnx").write_bytes(onnx_bytes)
            (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            if golden is not None:
                _save_golden(golden / f"{v.name}.npz", variables, sigma)
            manifest.append(
                {
                    "name": v.name,
                    "version": version,
                    "path": f"{v.name}/{version}/model.onnx",
                    "sha256": config["sha256"],
                    "bytes": len(onnx_bytes),
                    "source_sha256": config["source"]["sha256"],
                    "max_abs_error_vs_numpy_reference": error,
                }
            )
            print(f"{v.name}: {len(onnx_bytes)} bytes, max |onnx - reference| = {error:.2e}")
    (out / "LICENSE.scico").write_text(licence)
    (out / "MANIFEST.json").write_text(
        json.dumps(
            {
                "source": {"package": f"scico=={SCICO_VERSION}", "wheel_sha256": _file_sha(wheel)},
                "license": "BSD-3-Clause (see LICENSE.scico)",
                "converter": "services/inference/convert.py",
                "models": manifest,
            },
            indent=2,
        )
        + "\n"
    )
    return manifest


def drop_other_versions(model_dir: Path, keep: str) -> None:
    """Remove every version of a model but `keep` (the repository keeps one of each)."""
    if model_dir.is_dir():
        for old in model_dir.iterdir():
            if old.is_dir() and old.name != keep:
                shutil.rmtree(old)


def _save_golden(path: Path, variables: Mapping[str, Any], sigma: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = check_input(sigma or 0.1)
    want = reference.forward(variables, image, sigma).astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, image=image, sigma=np.float32(sigma or 0.0), reference=want)
    path.write_bytes(buf.getvalue())


def _file_sha(path: Path) -> str:
    return sha256(path.read_bytes())


def download_wheel(folder: Path) -> Path:
    """`pip download --no-deps scico==VERSION`: the wheel only, none of its jax dependencies."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
         f"scico=={SCICO_VERSION}"],
        check=True,
    )  # fmt: skip
    return next(folder.glob(f"scico-{SCICO_VERSION}-*.whl"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheel", type=Path, help="a downloaded scico wheel")
    source.add_argument("--download", action="store_true", help="pip download the wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model repository")
    parser.add_argument("--golden", type=Path, help="also save reference vectors here")
    args = parser.parse_args(argv)
    if args.download:
        with tempfile.TemporaryDirectory() as tmp:
            convert(download_wheel(Path(tmp)), args.out, args.golden)
    else:
        convert(args.wheel, args.out, args.golden)


if __name__ == "__main__":
    main()
