"""The committed model repository: checksums, manifest, and every ONNX model's output against
the numpy reference forward pass of the original (unfolded) weights, saved by the converter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from services.inference import convert, quantize, repository
from services.inference.settings import InferenceSettings

ROOT = InferenceSettings().models_dir
GOLDEN = Path(__file__).parent / "golden"
NAMES = [f"dncnn{d}-{v}" for d in (6, 17) for v in "lmhn"]


def test_the_repository_holds_the_eight_models_and_their_int8_copies() -> None:
    scanned = repository.scan(ROOT)
    everything = sorted([*NAMES, *(n + "-int8" for n in NAMES)])
    versions = [
        (n, quantize.INT8_VERSION if n.endswith("-int8") else convert.model_version(n))
        for n in everything
    ]
    assert [(m.name, m.version) for m in scanned] == versions
    assert all(m.config is not None for m in scanned), [m.error for m in scanned]
    precision = {m.name: m.config.precision for m in scanned if m.config is not None}
    assert {n: precision[n] for n in NAMES} == dict.fromkeys(NAMES, "fp32")
    assert {precision[n + "-int8"] for n in NAMES} == {"int8"}
    manifest = json.loads((ROOT / "MANIFEST.json").read_text())
    assert {m["name"] for m in manifest["models"]} == set(NAMES)
    assert {m["name"] for m in manifest["quantized"]["models"]} == {n + "-int8" for n in NAMES}
    for entry in manifest["models"] + manifest["quantized"]["models"]:
        path = ROOT / entry["path"]
        assert repository.file_sha256(path) == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
    assert "BSD" in (ROOT / "LICENSE.scico").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_committed_model_matches_the_reference(name: str) -> None:
    scanned = repository.latest(repository.scan(ROOT), name)
    assert scanned is not None and scanned.config is not None
    config = scanned.config
    assert repository.file_sha256(config.model_file) == config.sha256
    golden = np.load(GOLDEN / f"{name}.npz")
    session = ort.InferenceSession(str(config.model_file), providers=["CPUExecutionProvider"])
    feeds = {"image": golden["image"][None, None]}
    if config.sigma_input:
        feeds["sigma"] = np.array([golden["sigma"]], np.float32)
    out = session.run(None, feeds)[0][0, 0]
    np.testing.assert_allclose(out, golden["reference"], atol=1e-5)
    # Denoising, not identity: the reference removes most of the added noise.
    assert np.abs(out - golden["image"]).mean() > 0.02


@pytest.mark.parametrize("name", NAMES)
def test_int8_copy_stays_close_to_the_reference(name: str) -> None:
    scanned = repository.latest(repository.scan(ROOT), name + "-int8")
    assert scanned is not None and scanned.config is not None
    config = scanned.config
    assert repository.file_sha256(config.model_file) == config.sha256
    golden = np.load(GOLDEN / f"{name}.npz")
    session = ort.InferenceSession(str(config.model_file), providers=["CPUExecutionProvider"])
    feeds = {"image": golden["image"][None, None]}
    if config.sigma_input:
        feeds["sigma"] = np.array([golden["sigma"]], np.float32)
    out = session.run(None, feeds)[0][0, 0]
    # Quantisation error, on [0, 1]: a fraction of the noise removed (σ = 0.1 here).
    error = np.abs(out - golden["reference"])
    assert error.mean() < 0.02, error.mean()
    assert np.abs(out - golden["image"]).mean() > 0.02


@pytest.mark.parametrize("name", NAMES)
def test_int8_copy_keeps_the_padding_on_its_source_grid(name: str) -> None:
    """The exact rewrite of services.inference.quantize.fix_graph is in the committed copies: the
    circular padding's copies keep their source's uint8 grid (no second rounding before a
    convolution)."""
    import onnx

    scanned = repository.latest(repository.scan(ROOT), name + "-int8")
    assert scanned is not None and scanned.config is not None
    graph = onnx.load(str(scanned.config.model_file)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    padded = 0
    for n in graph.node:
        if n.op_type not in ("Slice", "Concat"):
            continue
        data = n.input[:1] if n.op_type == "Slice" else n.input
        sources = [made_by.get(i) for i in data]
        if not all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            continue
        quantised = users.get(n.output[0], [])
        if not quantised or any(q.op_type != "QuantizeLinear" for q in quantised):
            continue  # the fp32 last convolution's padding
        for q in quantised:
            assert all(q.input[1:3] == s.input[1:3] for s in sources if s is not None)
            padded += 1
    assert padded >= 4 * (scanned.config.depth - 1)  # two Slices and a Concat per side


def test_the_int8_copies_carry_the_sigma_gains_of_the_recipe() -> None:
    """quantize.SIGMA_GAINS and PLANE_SIGMA_GAINS are what the committed configs hold (the
    service reads the configs; `ModelConfig.gain` falls back to `sigma_gain`)."""
    for fp32 in NAMES:
        scanned = repository.latest(repository.scan(ROOT), fp32 + "-int8")
        assert scanned is not None and scanned.config is not None
        config = scanned.config
        assert config.sigma_gain == quantize.SIGMA_GAINS.get(fp32, 1.0)
        assert dict(config.plane_sigma_gains) == quantize.PLANE_SIGMA_GAINS.get(fp32, {})
        for plane, gain in quantize.PLANE_SIGMA_GAINS.get(fp32, {}).items():
            assert config.gain(plane) == gain
        assert config.gain("grey") == config.sigma_gain


def test_the_fp32_models_carry_the_converter_s_chroma_gains() -> None:
    """convert.PLANE_SIGMA_GAINS (full-resolution opponent chroma of σ-input models) is what the
    committed fp32 configs hold, under the version convert.MODEL_VERSIONS gives them; other
    planes and the blind models keep the plane's own σ."""
    for name in NAMES:
        scanned = repository.latest(repository.scan(ROOT), name)
        assert scanned is not None and scanned.config is not None
        config = scanned.config
        assert config.version == convert.model_version(name)
        assert dict(config.plane_sigma_gains) == convert.PLANE_SIGMA_GAINS.get(name, {})
        assert config.gain("grey") == config.gain("Y") == config.gain("C1@0.5") == 1.0
    assert convert.PLANE_SIGMA_GAINS["dncnn17-n"]["C1"] > 1.0
