"""Where an int8 copy's error comes from, and what keeping part of it in fp32 costs (issue 9).

    .venv/bin/python -m bench.int8_error                    # dncnn6-n and dncnn6-h
    .venv/bin/python -m bench.int8_error dncnn17-m --repeat 5

For each model, on the quantiser's own calibration inputs (services/inference/quantize.py:
noisy crops of the TUNING photos at the model's σ band, as the service feeds them), the mean
squared error of the output against the fp32 model's (0..255 scale) of:

- the committed int8 copy;
- the fp32 model with only its weights rounded as the copy's are (int8, one scale per output
  channel, the last convolution kept in fp32): what the weights alone cost;
- the copy with one activation's rounding taken out (its QuantizeLinear/DequantizeLinear pairs
  bypassed, the ReLU that onnxruntime's QDQ quantiser folds into them put back), one row per
  activation: what each rounding costs. The copy's biases were fitted with every rounding in
  place (`quantize.fit_to_fp32`), so a bypassed rounding can read slightly worse than none.

Then the time of one batch of four of the service's 268² windows (2 threads, best of
--repeat) for the fp32 model, the copy, and the copy with its penultimate activation left in
fp32 (the one convolution before the fp32 last one then runs in fp32: onnxruntime fuses a
convolution into QLinearConv only when its output is quantised).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from services.inference import quantize
from services.inference.repository import ModelConfig, scan
from services.inference.settings import InferenceSettings

WINDOW = 268  # the service's tile (256) plus the overlap on each side


def weights_only(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The fp32 model with its weights rounded as the int8 copy's are (symmetric int8, one
    scale per output channel), the last convolution left as it is."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    inits = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs[:-1]:
        w = numpy_helper.to_array(inits[conv.input[1]])
        scale = quantize.int8_weight_scales(w).reshape(-1, 1, 1, 1)
        rounded = (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(rounded, conv.input[1]))
    return model


def activation_grids(model: onnx.ModelProto) -> list[str]:
    """The scales of the copy's activation roundings (one per tensor and its padded copies,
    which share their source's grid), in graph order."""
    constants = {t.name for t in model.graph.initializer}
    grids: list[str] = []
    for node in model.graph.node:
        quantizes = node.op_type == "QuantizeLinear" and node.input[0] not in constants
        if quantizes and node.input[1] not in grids:
            grids.append(node.input[1])
    return grids


def without_rounding(copy: onnx.ModelProto, grid: str) -> onnx.ModelProto:
    """The copy with every rounding on `grid` bypassed (a ReLU put back where the quantiser had
    folded it into a uint8 QuantizeLinear with zero point 0)."""
    model = onnx.ModelProto()
    model.CopyFrom(copy)
    g = model.graph
    constants = {t.name for t in g.initializer}
    folded = grid.startswith("relu")
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[1] == grid]:
        if q.input[0] in constants:
            continue
        source = q.input[0]
        if folded:
            relu = helper.make_node("Relu", [source], [source + "_float"], name=q.name + "_relu")
            g.node.insert(list(g.node).index(q), relu)
            source = relu.output[0]
        dequantized = {
            n.output[0]
            for n in g.node
            if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]
        }
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in dequantized:
                    node.input[i] = source
    return model


def batch_time(model: onnx.ModelProto, config: ModelConfig, repeat: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feed = {"image": rng.random((4, 1, WINDOW, WINDOW), np.float32)}
    if config.sigma_input:
        feed["sigma"] = np.full(4, 0.1, np.float32)
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return best


def report(fp32: ModelConfig, int8: ModelConfig, planes: list[np.ndarray], repeat: int) -> None:
    inputs = list(quantize.feeds(fp32, planes, quantize.band_sigmas(fp32)))
    reference = onnx.load(str(fp32.model_file))
    copy = onnx.load(str(int8.model_file))
    expected = quantize.outputs(reference, inputs)

    def mse(model: onnx.ModelProto) -> float:
        return quantize.output_error(model, expected, inputs)

    print(f"\n## {int8.key}: MSE against {fp32.key} on the calibration inputs (0..255)\n")
    print("| variant | MSE |")
    print("|---|---|")
    print(f"| the int8 copy | {mse(copy):.3f} |")
    print(f"| fp32, weights rounded to int8 only | {mse(weights_only(reference)):.3f} |")
    grids = activation_grids(copy)
    for grid in grids:
        print(
            f"| the copy, `{grid.removesuffix('_scale')}` not rounded | {mse(without_rounding(copy, grid)):.3f} |"
        )
    penultimate = [g for g in grids if g.startswith("relu")][-1]
    times = {
        "fp32": batch_time(reference, fp32, repeat),
        "int8 copy": batch_time(copy, fp32, repeat),
        f"int8, `{penultimate.removesuffix('_scale')}` in fp32": batch_time(
            without_rounding(copy, penultimate), fp32, repeat
        ),
    }
    print(f"\nOne batch of four {WINDOW}² windows, 2 threads, best of {repeat}:\n")
    print("| model | s | vs the int8 copy |")
    print("|---|---|---|")
    for label, secs in times.items():
        print(f"| {label} | {secs:.3f} | {secs / times['int8 copy']:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["dncnn6-n", "dncnn6-h"])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    configs = {m.config.name: m.config for m in scan(InferenceSettings().models_dir) if m.config}
    planes = quantize.calibration_planes()
    for name in args.models:
        report(configs[name], configs[name + quantize.SUFFIX], planes, args.repeat)


if __name__ == "__main__":
    main()
