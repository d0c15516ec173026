"""The converter, on a small random DnCNN written in flax's msgpack format: the ONNX graph must
match the separate numpy reference (batch norm folded, circular padding kept, blocks in order).
The committed models are checked against reference outputs in test_model_repository.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.inference import reference

msgpack = pytest.importorskip("msgpack", reason="converter tests need the dev extra (msgpack)")
pytest.importorskip("onnx", reason="converter tests need the dev extra (onnx)")
ort = pytest.importorskip("onnxruntime")

from services.inference import convert  # noqa: E402


def random_dncnn(depth: int, channels: int, features: int = 4, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def kernel(cin: int, cout: int) -> np.ndarray:
        return rng.normal(0, 0.3, (3, 3, cin, cout)).astype(np.float32)

    params: dict[str, Any] = {"conv_start": {"kernel": kernel(channels, features)}}
    stats: dict[str, Any] = {}
    for i in range(depth - 2):
        params[f"ConvBNBlock_{i}"] = {
            "Conv_0": {"kernel": kernel(features, features)},
            "BatchNorm_0": {
                "scale": rng.uniform(0.5, 1.5, features).astype(np.float32),
                "bias": rng.normal(0, 0.1, features).astype(np.float32),
            },
        }
        stats[f"ConvBNBlock_{i}"] = {
            "BatchNorm_0": {
                "mean": rng.normal(0, 0.2, features).astype(np.float32),
                "var": rng.uniform(0.5, 2.0, features).astype(np.float32),
            }
        }
    params["conv_end"] = {"kernel": kernel(features, channels)}
    return {"params": params, "batch_stats": stats}


def to_flax_msgpack(tree: Any) -> bytes:
    """What flax.serialization.msgpack_serialize writes for a tree of float32 arrays."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            payload = msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes()), use_bin_type=True)
            return msgpack.ExtType(1, payload)
        raise TypeError(type(obj))

    data: bytes = msgpack.packb(tree, default=default, use_bin_type=True)
    return data


def run(model: Any, image: np.ndarray, sigma: float | None) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"image": image[None, None]}
    if sigma is not None:
        feeds["sigma"] = np.array([sigma], np.float32)
    out: np.ndarray = session.run(None, feeds)[0][0, 0]
    return out


@pytest.mark.parametrize(("depth", "sigma"), [(13, None), (4, 0.15)])
def test_onnx_matches_the_numpy_reference(depth: int, sigma: float | None) -> None:
    tree = random_dncnn(depth, channels=1 if sigma is None else 2)
    restored = convert.read_flax_msgpack(to_flax_msgpack(tree))
    np.testing.assert_array_equal(
        restored["params"]["ConvBNBlock_1"]["Conv_0"]["kernel"],
        tree["params"]["ConvBNBlock_1"]["Conv_0"]["kernel"],
    )
    model = convert.build_onnx(restored, "tiny", sigma_input=sigma is not None)
    image = convert.check_input(0.1)
    want = reference.forward(tree, image, sigma)
    np.testing.assert_allclose(run(model, image, sigma), want, atol=2e-5)


def test_blocks_run_in_numeric_order() -> None:
    tree = random_dncnn(13, channels=1)
    assert reference.block_names(tree["params"])[-3:] == [
        "ConvBNBlock_8",
        "ConvBNBlock_9",
        "ConvBNBlock_10",
    ]


def test_circular_padding_makes_the_model_shift_equivariant() -> None:
    # With zero or reflect padding the borders would break this; circular padding cannot.
    model = convert.build_onnx(random_dncnn(5, channels=1), "tiny", sigma_input=False)
    image = convert.check_input(0.1)
    shifted = np.roll(image, (5, -7), axis=(0, 1))
    np.testing.assert_allclose(
        run(model, shifted, None), np.roll(run(model, image, None), (5, -7), axis=(0, 1)), atol=1e-5
    )


def test_batch_norm_is_folded_into_the_convolutions() -> None:
    model = convert.build_onnx(random_dncnn(6, channels=1), "tiny", sigma_input=False)
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 6
