"""services.inference.quantize's fit of an int8 copy to its fp32 model (`fit_to_fp32`): the edit
of one convolution is exactly the shift asked for, whatever form its bias takes, and the fit
brings a copy that drifted from its fp32 model back towards it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from services.inference import quantize, repository
from services.inference.settings import InferenceSettings

ROOT = InferenceSettings().models_dir


def _configs() -> dict[str, repository.ModelConfig]:
    return {m.config.name: m.config for m in repository.scan(ROOT) if m.config is not None}


def _copy() -> tuple[onnx.ModelProto, repository.ModelConfig]:
    configs = _configs()
    return onnx.load(str(configs["dncnn6-n-int8"].model_file)), configs["dncnn6-n"]


def _planes() -> list[np.ndarray]:
    """Photo-like crops (0..255) in place of the tuning photos (a bench extra): smooth random
    fields with the spectrum of natural images (amplitude ~ 1/f) around mid-grey."""
    rng = np.random.default_rng(7)
    fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    falloff = 1 / np.maximum(np.hypot(fx, fy), 1 / 64)
    planes = []
    for _ in range(4):
        field = np.fft.ifft2(falloff * np.fft.fft2(rng.normal(size=(64, 64)))).real
        planes.append((128 + 50 * field / field.std()).clip(0, 255).astype(np.float32))
    return planes


def _pre_activation(model: onnx.ModelProto, tensor: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def _feed(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.clip(_planes()[0] + rng.normal(0, 15, (64, 64)), 0, 255) / 255
    return {
        "image": image.astype(np.float32)[None, None],
        "sigma": np.array([15 / 255], np.float32),
    }


@pytest.mark.parametrize(
    ("index", "drop_bias"),
    [
        (1, False),  # int8 weights, int32 bias
        (1, True),  # int8 weights, no bias: one is added on QLinearConv's scale
        (-1, False),  # the fp32 last convolution, with a float bias
        (-1, True),  # ... without one
    ],
)
def test_a_convolution_is_shifted_exactly(index: int, drop_bias: bool) -> None:
    model, _ = _copy()
    conv = [n for n in model.graph.node if n.op_type == "Conv"][index]
    if drop_bias:
        del conv.input[2:]
    before = _pre_activation(model, conv.output[0], _feed())
    shift = np.asarray(np.random.default_rng(1).uniform(-0.05, 0.05, before.shape[1]))
    quantize._Graph(model.graph).shift(conv, shift)
    onnx.checker.check_model(model, full_check=True)
    after = _pre_activation(model, conv.output[0], _feed())
    np.testing.assert_allclose(after, before + shift[None, :, None, None], atol=1e-4)
    assert np.abs(after - before).max() > 1e-3  # the edit did something


def test_the_fit_brings_a_drifted_copy_back_towards_its_fp32_model() -> None:
    model, fp32 = _copy()
    planes, sigmas = _planes(), (10.0, 20.0)
    _, before, _ = quantize.fit_to_fp32(_copy()[0], fp32, planes, sigmas)
    # A drift like rounding's, but larger: channels of two layers shifted.
    graph = quantize._Graph(model.graph)
    rng = np.random.default_rng(2)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in (convs[2], convs[3]):
        graph.shift(conv, rng.uniform(-0.3, 0.0, 64))
    fitted, drifted, after = quantize.fit_to_fp32(model, fp32, planes, sigmas)
    onnx.checker.check_model(fitted, full_check=True)
    assert drifted > 2 * before, (before, drifted)  # the drift is measurable
    assert after < 1.1 * before, (before, drifted, after)  # and taken out


def test_the_committed_copies_were_fitted() -> None:
    configs = _configs()
    copies = [c for c in configs.values() if c.precision == "int8"]
    assert len(copies) == 8
    for config in copies:
        fit = config.raw["quantization"]["fit"]
        if fit["applied"]:
            assert fit["mse_vs_fp32_after"] < fit["mse_vs_fp32_before"], config.name
        else:  # the fit did not bring it closer: the copy stays as quantised
            assert fit["mse_vs_fp32_after"] == fit["mse_vs_fp32_before"], config.name
    # Where the last convolution is fp32 (the 6-layer copies) its input's grid is filled
    # channel by channel (version 5), which brought every such copy closer.
    readout = [c for c in copies if "last" in c.raw["quantization"].get("fp32_convolutions", [])]
    assert len(readout) == 4 and all(c.raw["quantization"]["fit"]["applied"] for c in readout)


def _mse_vs_fp32(model: onnx.ModelProto, fp32: repository.ModelConfig, feeds: list) -> float:
    reference = quantize.fold_sigma_input(onnx.load(str(fp32.model_file)))
    return quantize.output_error(model, quantize.outputs(reference, feeds), feeds)


def test_the_readout_grid_is_filled_channel_by_channel() -> None:
    model, fp32 = _copy()
    feeds = list(quantize.feeds(fp32, _planes(), (10.0, 20.0)))
    graph = quantize._Graph(model.graph)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    before, last = convs[-2], convs[-1]
    # Spread the channels' ranges, exactly in real arithmetic: channel c of the activation the
    # fp32 last convolution reads is multiplied by a_c, and its weights there divided by a_c.
    a = np.random.default_rng(3).uniform(0.2, 1.6, 64).astype(np.float32)
    w_scale = graph.dequantized(before.input[1]).input[1]
    b_scale = graph.dequantized(before.input[2]).input[1]
    ints = graph.array(graph.dequantized(before.input[1]).input[0]).copy()
    reference = quantize.fold_sigma_input(onnx.load(str(fp32.model_file)))
    ref_conv = [n for n in reference.graph.node if n.op_type == "Conv"][-2]
    ref_weights = quantize._Graph(reference.graph).array(ref_conv.input[1])
    units = graph.units(before, ref_weights)
    for name in (w_scale, b_scale):
        graph.put(name, graph.array(name) * a)
    graph.put(last.input[1], graph.array(last.input[1]) / a[None, :, None, None])
    spread = _mse_vs_fp32(model, fp32, feeds)
    # The fit reads the scaling back from the weight scales (what it compares the fp32 model's
    # channels in).
    np.testing.assert_allclose(
        graph.units(before, ref_weights), units * a[None, :, None, None], rtol=1e-5
    )

    quantize._equalise_readout(model, feeds)
    onnx.checker.check_model(model, full_check=True)
    assert _mse_vs_fp32(model, fp32, feeds) < 0.8 * spread
    # Only the scales moved: the int8 weights are the ones given.
    np.testing.assert_array_equal(graph.array(graph.dequantized(before.input[1]).input[0]), ints)
    # Each channel's own 99.99th percentile now reaches the grid's range.
    grid = 255 * float(graph.array(graph.dequantized(last.input[0]).input[1]))
    reading = quantize._session(model, [before.output[0]])
    acts = np.concatenate(
        [np.maximum(reading.run(None, f)[0], 0).swapaxes(0, 1).reshape(64, -1) for f in feeds], 1
    )
    top = np.percentile(acts, quantize.READOUT_PERCENTILE, axis=1)
    # (but a channel that would need more than 64x, the bound on a_c)
    filled = np.isclose(top, grid, rtol=1e-3)
    assert filled.sum() > 48, top
    assert (top <= grid * 1.001).all(), top
