"""Int8 copies of the repository's fp32 models, for CPUs: ~3.5x faster, 0.1-0.4 dB lost.

    .venv/bin/python -m services.inference.quantize      # needs the dev and bench extras

For every fp32 model `<name>/1` it writes `<name>-int8/<INT8_VERSION>/{model.onnx,config.json}`:
onnxruntime's static quantisation (QDQ format: int8 weights per output channel, uint8
activations; the last convolution kept in fp32), with activation ranges calibrated
(0.01..99.99 percentiles) on noisy crops of bench/denoise.py's TUNING photos only (grey, and
the opponent chroma planes the colour path feeds the models), at the noise levels of the σ
band `auto` uses the model in and its input gains there (`band_sigmas`). Against calibrating
every model at σ = 5..50 with every convolution int8, this halved dncnn6-n's loss on the tuning
photos' colour planes (0.84 -> 0.34 dB at σ = 9, 0.55 -> 0.23 at σ = 15). The config is the
fp32 model's with `precision: int8`, the new file's sha256 and the quantised model's error
against the fp32 model on the converter's check image. Calibration is deterministic (seeded),
so a rerun gives the same files.

Then (`--rewire` does only this, on existing copies, without recalibrating): the circular
padding's Slice/Concat copies of each activation keep the activation's uint8 grid instead of
being rounded again onto their own (`padding_on_source_grid`, exact), and a σ-input copy gets the
σ gain in SIGMA_GAINS written into its config (the service multiplies σ by it). Last (`--fit`
does only this, on existing copies), the activation the fp32 last convolution reads fills its
uint8 grid channel by channel, and each convolution's bias is corrected towards the fp32
model's outputs, layer by layer (`fit_to_fp32`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from services.inference import convert, noise
from services.inference.repository import ModelConfig, file_sha256, scan

SUFFIX = "-int8"
# The int8 copies' version: a new one whenever the recipe changes their bytes, so that output
# keys (which name model@version) never point at bytes an older copy made. 1: c0ecc07, bce4cd1;
# 2: the padding on its source's grid, σ gains; 3: σ gains per plane kind (config only: the
# ONNX files are version 2's); 4: fitted to the fp32 models per channel (fit_to_fp32); 5: the
# last convolution's input grid filled channel by channel (_equalise_readout), then refitted.
INT8_VERSION = "5"
# σ-input copies: the σ they are given is multiplied by this. Quantised, dncnn6-n under-denoises
# at its σ: on the colour tuning photos' opponent planes (chelsea, rocket, 256², σ = 5 / 10 /
# 15 / 25) the int8 copy lost -0.58 / -0.29 / -0.25 / -0.19 dB against its fp32 model at the true
# σ, and -0.57 / -0.20 / -0.06 / -0.00 at 1.1 σ (1.05..1.15 swept; /tmp script, BENCHMARKS.md).
SIGMA_GAINS = {"dncnn6-n": 1.1}
# ... per plane kind (the service's plane names, "@0.5" for half-resolution chroma), where the
# tuning photos (chelsea, rocket, whole, σ = 10..50, through the service's planes) preferred
# another: the luma 1.05, full-resolution chroma (below σ 17.5) 1.2, half-resolution chroma
# (with its guided upsampling) 1.05 (BENCHMARKS.md, issue 9, run 4).
PLANE_SIGMA_GAINS = {
    "dncnn6-n": {"Y": 1.05, "C1": 1.2, "C2": 1.2, "C1@0.5": 1.05, "C2@0.5": 1.05},
}
CALIBRATION_PHOTOS = ("coins", "chelsea", "rocket")  # bench/denoise.py's TUNING photos
CALIBRATION_SIGMAS = (5.0, 15.0, 25.0, 35.0, 50.0)
CROP = 96
# The per-channel percentile `_equalise_readout` fills the last convolution's input grid to
# (the calibration's own, Recipe.percentile).
READOUT_PERCENTILE = 99.99
# fold_sigma_input's nodes (σ × the first kernel's sums, added to the first convolution).
SIGMA_NODES = ("sigma_bias_mul", "sigma_bias_add")


def calibration_planes() -> list[np.ndarray]:
    """Clean crops (0..255 float32): grey photos, luma and the opponent chroma planes."""
    from skimage import data  # the bench extra

    planes = []
    for name in CALIBRATION_PHOTOS:
        img = getattr(data, name)()
        sources = [img.astype(np.float32)] if img.ndim == 2 else noise.opponent_planes(img[..., :3])
        for plane in sources:
            h, w = plane.shape
            for y, x in ((0, 0), (h // 2 - CROP // 2, w // 2 - CROP // 2), (h - CROP, w - CROP)):
                planes.append(plane[y : y + CROP, x : x + CROP])
    return planes


@dataclass(frozen=True)
class Recipe:
    """How a model is quantised (the experiments' knobs; the defaults are what ships)."""

    sigmas: tuple[float, ...] = ()  # calibration σ values (empty: `band_sigmas`)
    method: str = "Percentile"  # onnxruntime CalibrationMethod: MinMax, Entropy, Percentile
    percentile: float = 99.99
    # Kept in fp32: "first", "last" (convolutions), "sigma" (a σ-input model's σ bias).
    exclude: tuple[str, ...] = ("last",)
    # The circular padding's copies stay on their source's uint8 grid.
    padding_grid: bool = True


def band_sigmas(config: ModelConfig) -> tuple[float, ...]:
    """Six σ values spread over the band `auto` uses the model in (clamped to 5..50), so the
    activation ranges are those of its real inputs; CALIBRATION_SIGMAS for a model `auto`
    never picks."""
    lo, hi = config.sigma_range
    if hi <= lo:
        return CALIBRATION_SIGMAS
    lo, hi = max(lo, CALIBRATION_SIGMAS[0]), min(hi, CALIBRATION_SIGMAS[-1])
    return tuple(round(float(s), 1) for s in np.linspace(lo, hi, 6))


def feeds(
    config: ModelConfig, planes: list[np.ndarray], sigmas: tuple[float, ...] = CALIBRATION_SIGMAS
) -> Iterator[dict[str, np.ndarray]]:
    """Noisy inputs as the service gives them: σ-input models get σ, blind ones the gain
    that scales σ to their training level (within selection's limits)."""
    from services.inference.selection import MAX_SCALE, SIGMA_INPUT_MAX

    rng = np.random.default_rng(0)
    for sigma in sigmas:
        for plane in planes:
            noisy = plane + rng.normal(0.0, sigma, plane.shape).astype(np.float32)
            if config.sigma_input:
                gain, s = 1.0, min(sigma, SIGMA_INPUT_MAX)
            else:
                assert config.trained_sigma is not None
                gain = min(MAX_SCALE, max(1 / MAX_SCALE, config.trained_sigma / sigma))
                s = 0.0
            feed = {"image": (noisy * gain / 255).astype(np.float32)[None, None]}
            if config.sigma_input:
                feed["sigma"] = np.array([s / 255], np.float32)
            yield feed


def with_sigma(conv_output: str) -> str:
    """The name `fold_sigma_input` gives the first convolution's output once σ is added."""
    return conv_output + "_sigma"


def fold_sigma_input(model: Any) -> Any:
    """An exact rewrite of a σ-input model for quantisation: the converter concatenates a
    constant σ plane to the image before the first convolution; a 3x3 convolution of a constant
    plane (circular padding keeps it constant) is σ times the sum of that channel's kernel, so
    the first convolution sees the image alone and σ·Σw is added to its output. Quantised, σ
    then keeps its own scale instead of a few steps of the image's range."""
    from onnx import checker, helper, numpy_helper

    g = model.graph
    nodes = list(g.node)
    concat = next(n for n in nodes if n.op_type == "Concat" and n.input[0] == "image")
    expand = next(n for n in nodes if n.output[0] == concat.input[1])
    sigma4 = expand.input[0]  # σ reshaped to (N, 1, 1, 1)
    conv = next(n for n in nodes if n.op_type == "Conv")
    for n in nodes:
        for i, name in enumerate(n.input):
            if name == concat.output[0]:
                n.input[i] = "image"
            elif name == conv.output[0]:
                n.input[i] = with_sigma(conv.output[0])
    inits = {t.name: t for t in g.initializer}
    w = numpy_helper.to_array(inits[conv.input[1]])
    per_channel = w[:, 1].sum(axis=(1, 2)).reshape(1, -1, 1, 1).astype(np.float32)
    inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w[:, :1].copy(), conv.input[1]))
    g.initializer.append(numpy_helper.from_array(per_channel, "sigma_kernel_sums"))
    at = list(g.node).index(conv) + 1
    mul = helper.make_node(
        "Mul", [sigma4, "sigma_kernel_sums"], ["sigma_bias"], name=SIGMA_NODES[0]
    )
    add = helper.make_node(
        "Add", [conv.output[0], "sigma_bias"], [with_sigma(conv.output[0])], name=SIGMA_NODES[1]
    )
    g.node.insert(at, mul)
    g.node.insert(at + 1, add)
    g.node.remove(concat)
    g.node.remove(expand)
    used = {name for n in g.node for name in n.input}
    for n in list(g.node):
        if n.op_type == "Shape" and n.output[0] not in used:
            g.node.remove(n)
    checker.check_model(model, full_check=True)
    return model


def quantize(
    config: ModelConfig, out: Path, planes: list[np.ndarray], recipe: Recipe | None = None
) -> dict[str, Any]:
    """Write `<out>/<name>-int8/<version>/` for one fp32 model; returns its manifest entry."""
    given = recipe or Recipe()
    recipe = given if given.sigmas else replace(given, sigmas=band_sigmas(config))
    sigmas = recipe.sigmas
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = feeds(config, planes, sigmas)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    name = config.name + SUFFIX
    folder = out / name / INT8_VERSION
    convert.drop_other_versions(out / name, INT8_VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        source = config.model_file
        if config.sigma_input:
            source = Path(tmp) / "folded.onnx"
            onnx.save(fold_sigma_input(onnx.load(str(config.model_file))), str(source))
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        exclude = [convs[0]] * ("first" in recipe.exclude) + [convs[-1]] * (
            "last" in recipe.exclude
        )
        if "sigma" in recipe.exclude and config.sigma_input:
            exclude += SIGMA_NODES
        quantize_static(
            str(pre),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Activation ranges from the 0.01 and 99.99 percentiles: min/max ranges, widened by
            # rare outliers, cost 0.1-2 dB more (measured on the tuning photos); so did entropy
            # calibration and the 99.9 percentile; 99.999 was no better. The last convolution
            # (64 channels to the noise estimate, ~2% of the work) stays fp32 (Recipe).
            calibrate_method=getattr(CalibrationMethod, recipe.method),
            extra_options={"CalibPercentile": recipe.percentile},
            nodes_to_exclude=exclude,
        )
    model, before, after = fit_to_fp32(
        fix_graph(onnx.load(str(target)), recipe.padding_grid), config, planes, sigmas
    )
    onnx.save(model, str(target))
    sigma_input = "none"
    if config.sigma_input:
        sigma_input = "folded into the first convolution's output (exact)" + (
            ", in fp32" if "sigma" in recipe.exclude else ""
        )
    quantization = {
        "from": f"{config.key} (sha256 {config.sha256})",
        "tool": f"onnxruntime.quantization.quantize_static {ort.__version__}",
        "format": "QDQ",
        "weights": "int8, per output channel",
        "activations": f"uint8, {recipe.method.lower()} calibration"
        + (
            f" ({100 - recipe.percentile:g}..{recipe.percentile:g})"
            if recipe.method == "Percentile"
            else ""
        ),
        "fp32_convolutions": [e for e in recipe.exclude if e in ("first", "last")],
        "sigma_input": sigma_input,
        "padding": PADDING_NOTE if recipe.padding_grid else "calibrated on its own",
        "calibration": f"{', '.join(CALIBRATION_PHOTOS)} (scikit-image), crops {CROP}², "
        f"sigma {', '.join(f'{s:g}' for s in recipe.sigmas)}",
        "fit": fit_note(before, after),
    }
    raw = dict(config.raw)
    raw.update(
        name=name,
        version=INT8_VERSION,
        precision="int8",
        description=raw["description"] + "; int8 (onnxruntime static quantisation, QDQ)",
    )
    return _describe(config, raw, quantization, target)


PADDING_NOTE = "circular padding on its source's uint8 grid (padding_on_source_grid)"


def fit_note(before: float, after: float) -> dict[str, Any]:
    """What `fit_to_fp32` did, for the copy's config."""
    return {
        "method": "the last convolution's input grid filled channel by channel "
        "(_equalise_readout), then a shift per output channel of each convolution (its bias), "
        "fitted to the fp32 model's pre-activations on the calibration inputs, layer by layer "
        "(fit_to_fp32)",
        "applied": after < before,
        "mse_vs_fp32_before": round(before, 4),
        "mse_vs_fp32_after": round(after, 4),
    }


def fix_graph(model: Any, padding: bool = True) -> Any:
    """The exact rewrite of a QDQ model after onnxruntime's quantiser (it costs nothing)."""
    if padding:
        model = padding_on_source_grid(model)
    return model


def padding_on_source_grid(model: Any) -> Any:
    """Quantise the circular padding's Slice and Concat outputs on their source's grid.

    The converter pads each convolution's input circularly with two Slice+Concat pairs, and
    the QDQ quantiser calibrates each of those tensors on its own: the padded copy of an
    activation, made of the activation's own values, got a slightly different uint8 scale and
    was rounded a second time before every convolution. On the source's scale and zero point
    that re-quantisation is exact (the values are already on that grid).
    """
    from onnx import checker

    g = model.graph
    made_by = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)

    def grid(dq: Any) -> tuple[str, ...]:
        return tuple(dq.input[1:3])

    changed = 0
    for node in g.node:  # ONNX keeps nodes in topological order: sources come first
        if node.op_type not in ("Slice", "Concat"):
            continue
        data = node.input[:1] if node.op_type == "Slice" else list(node.input)
        sources = [made_by.get(name) for name in data]
        if not all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            continue
        grids = {grid(s) for s in sources}
        users = consumers.get(node.output[0], [])
        if len(grids) != 1 or not users or any(u.op_type != "QuantizeLinear" for u in users):
            continue
        shared = next(iter(grids))
        for q in users:
            ends = [
                q,
                *(d for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"),
            ]
            for end in ends:
                for i, name in enumerate(shared):
                    end.input[1 + i] = name
        changed += 1
    if not changed:
        raise ValueError("no quantised padding (Slice/Concat between Q/DQ pairs) found")
    used = {name for n in g.node for name in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    checker.check_model(model, full_check=True)
    return model


def fit_to_fp32(
    model: Any, fp32: ModelConfig, planes: list[np.ndarray], sigmas: tuple[float, ...]
) -> tuple[Any, float, float]:
    """Post-training bias correction (in the manner of Nagel et al., 2019), measured rather
    than derived: rounding weights and activations to 8 bits shifts each channel's output a
    little, and the shifts add up over the layers. Layer by layer, each convolution of the QDQ
    copy gets a shift per output channel (`_fit_shift`) that brings its pre-activations (its
    quantised weights on its quantised inputs, the layers before it already corrected) to the
    fp32 model's on the calibration inputs; before the last one, its input's grid is filled
    channel by channel (`_equalise_readout`). The shift goes into the int32 bias on the scale
    onnxruntime's QLinearConv assumes (input scale x weight scale), so the copy runs as fast as
    before; a convolution without a bias gets one in that form (a float one where it is fp32).
    Returns the model and the mean squared error of its output against the fp32 model's on the
    calibration inputs (0..255 scale) before and after; where the corrected copy is not closer
    to the fp32 model than the copy given, the copy given (after = before). `model` is edited
    in place."""
    import onnx

    reference = onnx.load(str(fp32.model_file))
    if fp32.sigma_input:
        reference = fold_sigma_input(reference)
    inputs = list(feeds(fp32, planes, sigmas))
    expected = outputs(reference, inputs)
    before = output_error(model, expected, inputs)
    given = type(model)()
    given.CopyFrom(model)
    g = model.graph
    ref_graph = _Graph(reference.graph)
    ref_convs = [n for n in reference.graph.node if n.op_type == "Conv"]
    convs = [n for n in g.node if n.op_type == "Conv"]
    if len(convs) != len(ref_convs):
        raise ValueError(f"{len(convs)} convolutions in the copy, {len(ref_convs)} in fp32")
    for k, (conv, ref_conv) in enumerate(zip(convs, ref_convs, strict=True)):
        last = k == len(convs) - 1
        if last:  # its input's grid, filled on the activations of the layers fitted so far
            _equalise_readout(model, inputs)
        graph = _Graph(g)
        # The tensor before the ReLU: the convolution's, or the σ add's after it.
        ours, theirs = conv.output[0], ref_conv.output[0]
        adds = [n for n in g.node if n.op_type == "Add" and ours in graph.sources(n)]
        if adds:
            ours, theirs = adds[0].output[0], with_sigma(theirs)
        mine, ref = _session(model, [ours]), _session(reference, [theirs])
        units = graph.units(conv, ref_graph.array(ref_conv.input[1]))
        pairs = [(mine.run(None, f)[0], ref.run(None, f)[0] * units) for f in inputs]
        graph.shift(conv, _fit_shift(pairs, relu=not last))
    after = output_error(model, expected, inputs)
    return (model, before, after) if after < before else (given, before, before)


def outputs(model: Any, inputs: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """`model`'s first output for each feed of `inputs`."""
    session = _session(model, [model.graph.output[0].name])
    return [session.run(None, feed)[0] for feed in inputs]


def output_error(
    model: Any, expected: list[np.ndarray], inputs: list[dict[str, np.ndarray]]
) -> float:
    """Mean squared error of `model`'s outputs on `inputs` against `expected` (the fp32
    model's), on the 0..255 scale."""
    diffs = [np.mean((a - b) ** 2) for a, b in zip(outputs(model, inputs), expected, strict=True)]
    return float(np.mean(diffs) * 255**2)


def int8_weight_scales(weights: np.ndarray) -> np.ndarray:
    """The scale onnxruntime's quantiser rounds a convolution's weights on, per output channel
    (symmetric int8): max |w| / 127."""
    scales: np.ndarray = np.abs(weights).reshape(len(weights), -1).max(axis=1) / 127
    return scales


def _session(model: Any, outputs: list[str]) -> Any:
    """An onnxruntime CPU session of a copy of `model` that returns the tensors `outputs`."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m = type(model)()
    m.CopyFrom(model)
    del m.graph.output[:]
    for name in outputs:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def _equalise_readout(model: Any, inputs: list[dict[str, np.ndarray]]) -> None:
    """Fill the uint8 grid of the activation the fp32 last convolution reads, channel by
    channel: the grid is one per tensor, set by the calibration's percentile over every
    channel, so a few wide channels were clipped by it (dncnn6-n-int8: two of 64 channels'
    99.99th percentiles at 0.53 and 0.60 against a range of 0.47) and the narrow ones used a few
    of its 256 steps. Each output channel c of the convolution before it is scaled by
    a_c = range / (c's own percentile) through its weight and bias scales (the int8 and int32
    values are unchanged), and the last convolution's weights for that channel divided by a_c:
    exact but for the rounding and clipping, which is what changes. On dncnn6-n-int8 this
    alone took the MSE against fp32 on the calibration inputs from 0.96 to 0.51 (rounding that
    activation not at all: 0.44). The middle activations feed int8 weights, which would have
    to be rounded again: measured there, it made the copies worse."""
    graph = _Graph(model.graph)
    g = graph.g
    convs = [n for n in g.node if n.op_type == "Conv"]
    if len(convs) < 2:
        return
    before, last = convs[-2], convs[-1]
    grids = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == before.output[0]]
    bias = before.input[2] if len(before.input) > 2 else ""
    w_dq, b_dq = graph.dequantized(before.input[1]), graph.dequantized(bias) if bias else None
    if not grids or w_dq is None or b_dq is None or graph.dequantized(last.input[1]) is not None:
        return  # not an int8 convolution before an fp32 one
    reading = _session(model, [before.output[0]])
    activations = np.concatenate(
        [
            np.maximum(reading.run(None, feed)[0], 0.0)
            .swapaxes(0, 1)
            .reshape(graph.array(w_dq.input[1]).size, -1)
            for feed in inputs
        ],
        axis=1,
    )
    top = np.percentile(activations, READOUT_PERCENTILE, axis=1)
    grid = 255.0 * float(graph.array(grids[0].input[1]))
    a = np.where(top > 0, grid / np.maximum(top, 1e-12), 1.0).clip(1 / 64, 64)
    for name in (w_dq.input[1], b_dq.input[1]):
        graph.put(name, (graph.array(name) * a).astype(np.float32))
    weights = graph.array(last.input[1])
    graph.put(last.input[1], (weights / a[None, :, None, None]).astype(np.float32))


def _fit_shift(
    pairs: list[tuple[np.ndarray, np.ndarray]], relu: bool, rounds: int = 3
) -> np.ndarray:
    """Per channel (axis 1) the shift b that makes ours + b closest to theirs (pairs of NCHW
    arrays) in least squares: their mean difference. Before a ReLU, closest after it: the target
    is max(theirs, 0) over the positions where either side is open (ours + b > 0 or theirs > 0),
    so that a shift that would open a channel where the fp32 model's is closed counts against it;
    the positions depend on b, hence a few rounds from b = 0. (A scale per channel fitted the
    same way shrank the channels: least squares on inputs that carry the rounding's noise
    underestimates the slope, and the copies got further from their fp32 models.)"""
    channels = pairs[0][0].shape[1]
    shift = np.zeros(channels)
    for _ in range(rounds if relu else 1):
        count, total = np.zeros(channels), np.zeros(channels)
        for ours, theirs in pairs:
            o, r = ours.astype(np.float64), theirs.astype(np.float64)
            if relu:
                m = (o + shift[None, :, None, None] > 0) | (r > 0)
                r = np.maximum(r, 0.0)
            else:
                m = np.ones(r.shape, bool)
            count += m.sum(axis=(0, 2, 3))
            total += np.where(m, r - o, 0.0).sum(axis=(0, 2, 3))
        shift = np.where(count > 0, total / np.maximum(count, 1.0), 0.0)
    return shift


class _Graph:
    """fit_to_fp32's edits of one QDQ graph's convolutions."""

    def __init__(self, g: Any) -> None:
        self.g = g
        self.inits = {t.name: t for t in g.initializer}
        self.made_by = {o: n for n in g.node for o in n.output}

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def put(self, name: str, value: np.ndarray) -> None:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(value, name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
        else:
            self.g.initializer.append(tensor)
            self.inits[name] = self.g.initializer[-1]

    def sources(self, node: Any) -> set[str]:
        """The tensors `node` reads, each also through the Q/DQ pairs in front of it."""
        found = set()
        for name in node.input:
            while name:
                found.add(name)
                maker = self.made_by.get(name)
                if maker is None or maker.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                    break
                name = maker.input[0]
        return found

    def dequantized(self, name: str) -> Any:
        """The DequantizeLinear node that makes `name`, or None (a float initializer)."""
        node = self.made_by.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def units(self, conv: Any, reference: np.ndarray) -> np.ndarray:
        """conv's output channels over the fp32 model's (`reference`: its weights), broadcast
        over NCHW: 1 but where `_equalise_readout` scaled them, which the weight scale tells
        against the quantiser's (`int8_weight_scales`)."""
        dq = self.dequantized(conv.input[1])
        quantiser = int8_weight_scales(reference.astype(np.float64))
        if dq is None:
            return np.ones((1, len(quantiser), 1, 1), np.float32)
        scale = self.array(dq.input[1]).astype(np.float64)
        ratio = np.where(quantiser > 0, scale / np.where(quantiser > 0, quantiser, 1.0), 1.0)
        return ratio.reshape(1, -1, 1, 1).astype(np.float32)

    def shift(self, conv: Any, shift: np.ndarray) -> None:
        """conv's output channel c becomes itself + shift[c]."""
        from onnx import helper

        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
        bias_dq = self.dequantized(bias) if bias else None
        w_dq = self.dequantized(conv.input[1])
        if bias_dq is not None:
            scale = self.array(bias_dq.input[1]).astype(np.float64)
            value = self.array(bias_dq.input[0]) + np.round(shift / scale)
            self.put(bias_dq.input[0], value.astype(np.int32))
        elif bias:
            self.put(bias, (self.array(bias) + shift).astype(np.float32))
        elif w_dq is not None:
            # A new int32 bias on the scale QLinearConv assumes: input scale x weight scale.
            x_dq = self.dequantized(conv.input[0])
            if x_dq is None:
                raise ValueError(f"{conv.name}: int8 weights on an input that is not quantised")
            scale = (self.array(x_dq.input[1]) * self.array(w_dq.input[1])).astype(np.float32)
            name = conv.name + "_fit_bias"
            self.put(name + "_quantized", np.round(shift / scale).astype(np.int32))
            self.put(name + "_scale", scale)
            self.put(name + "_zero_point", np.zeros_like(scale, dtype=np.int32))
            node = helper.make_node(
                "DequantizeLinear",
                [name + "_quantized", name + "_scale", name + "_zero_point"],
                [name],
                name=name + "_DequantizeLinear",
                axis=0,
            )
            self.g.node.insert(list(self.g.node).index(conv), node)
            conv.input.append(name)
        else:
            self.put(conv.name + "_fit_bias", shift.astype(np.float32))
            conv.input.append(conv.name + "_fit_bias")


def rewire(
    int8: ModelConfig,
    fp32: ModelConfig,
    padding: bool = True,
    planes: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Apply `fix_graph` (and, given calibration `planes`, `fit_to_fp32`) to a committed int8
    copy (no recalibration: the quantised weights and the activation ranges are unchanged) as
    version INT8_VERSION, with its σ gain; its config and manifest entry are rewritten."""
    import onnx

    model = fix_graph(onnx.load(str(int8.model_file)), padding)
    quantization = dict(int8.raw["quantization"])
    if planes is not None:
        model, before, after = fit_to_fp32(model, fp32, planes, band_sigmas(fp32))
        quantization["fit"] = fit_note(before, after)
    folder = int8.path.parent / INT8_VERSION
    convert.drop_other_versions(int8.path.parent, INT8_VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / int8.file
    onnx.save(model, str(target))
    if padding:
        quantization["padding"] = PADDING_NOTE
    raw = dict(int8.raw)
    raw["version"] = INT8_VERSION
    return _describe(fp32, raw, quantization, target)


def _describe(
    fp32: ModelConfig, raw: dict[str, Any], quantization: dict[str, Any], target: Path
) -> dict[str, Any]:
    """Check `target` against the fp32 model on the converter's check image (on [0, 1]), write
    its config.json from `raw` and `quantization`, and return its manifest entry."""
    import onnxruntime as ort

    sigma = 0.1
    image = convert.check_input(sigma)
    gain = SIGMA_GAINS.get(fp32.name, 1.0) if fp32.sigma_input else 1.0
    if gain != 1.0:
        raw["sigma_gain"] = gain
    planes = PLANE_SIGMA_GAINS.get(fp32.name, {}) if fp32.sigma_input else {}
    raw.pop("plane_sigma_gains", None)  # the fp32 model's (convert.py) are not the copy's
    if planes:
        raw["plane_sigma_gains"] = dict(sorted(planes.items()))
    runs = []
    for path, s in ((fp32.model_file, sigma), (target, sigma * gain)):  # as the service runs them
        feed = {"image": image[None, None]}
        if fp32.sigma_input:
            feed["sigma"] = np.array([s], np.float32)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs.append(session.run(None, feed)[0])
    error = np.abs(runs[0] - runs[1])
    digest = file_sha256(target)
    quantization.update(
        max_abs_error_vs_fp32=float(error.max()), mean_abs_error_vs_fp32=float(error.mean())
    )
    raw.update(sha256=digest, quantization=quantization)
    name, version = str(raw["name"]), str(raw["version"])
    (target.parent / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"{name}: {target.stat().st_size} bytes, max |int8 - fp32| = {error.max():.2e}")
    return {
        "name": name,
        "version": version,
        "path": f"{name}/{version}/model.onnx",
        "sha256": digest,
        "bytes": target.stat().st_size,
        "quantized_from": fp32.key,
        "max_abs_error_vs_fp32": float(error.max()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=convert.DEFAULT_OUT, help="model repository")
    parser.add_argument(
        "models", nargs="*", help="fp32 models to quantise (default: all; the 17-layer ones "
        "need ~20 GB for percentile calibration)"
    )  # fmt: skip
    parser.add_argument(
        "--rewire", action="store_true", help="only rewrite the existing int8 copies' padding "
        "(padding_on_source_grid) and σ gains, without recalibrating"
    )  # fmt: skip
    parser.add_argument(
        "--fit", action="store_true", help="only fit the existing int8 copies to their fp32 "
        "models (fit_to_fp32) and rewrite their σ gains, without recalibrating"
    )  # fmt: skip
    args = parser.parse_args(argv)
    configs = {m.config.name: m.config for m in scan(args.repo) if m.config is not None}
    fp32 = [
        c
        for c in configs.values()
        if c.precision == "fp32" and (not args.models or c.name in args.models)
    ]
    if args.rewire or args.fit:
        planes = calibration_planes() if args.fit else None
        entries = [
            rewire(configs[c.name + SUFFIX], c, padding=args.rewire, planes=planes)
            for c in fp32
            if c.name + SUFFIX in configs
        ]
    else:
        planes = calibration_planes()
        entries = [quantize(config, args.repo, planes) for config in fp32]
    manifest_path = args.repo / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    done = {e["name"] for e in entries}
    kept = [e for e in manifest.get("quantized", {}).get("models", []) if e["name"] not in done]
    models = sorted(kept + entries, key=lambda e: str(e["name"]))
    manifest["quantized"] = {"tool": "services/inference/quantize.py", "models": models}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
