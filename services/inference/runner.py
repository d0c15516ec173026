"""onnxruntime sessions: which execution provider, how many threads, one synchronous `run`.

`provider="auto"` takes CUDA when the installed onnxruntime offers it (the `gpu` extra installs
onnxruntime-gpu) and the CPU otherwise. onnxruntime itself falls back to the CPU when the CUDA
libraries cannot be loaded, so the provider reported is the one the session really got, never
the one that was asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from services.inference.repository import ModelConfig

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
ProviderChoice = Literal["auto", "cpu", "cuda"]


class ProviderUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class RunnerOptions:
    provider: ProviderChoice = "auto"
    # onnxruntime intra-op threads per session; 0 lets it use every physical core.
    intra_op_threads: int = 0
    cuda_device: int = 0


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def providers_for(options: RunnerOptions, available: Sequence[str]) -> list[Any]:
    """The provider list for a session, best first."""
    cuda: list[Any] = [
        # HEURISTIC: cuDNN's exhaustive search would run again for every new tile shape.
        (CUDA, {"device_id": options.cuda_device, "cudnn_conv_algo_search": "HEURISTIC"})
    ]
    if options.provider == "cpu":
        return [CPU]
    if CUDA in available:
        return [*cuda, CPU]
    if options.provider == "cuda":
        raise ProviderUnavailable(
            "the CUDA execution provider is not available (install the gpu extra: "
            "onnxruntime-gpu, with CUDA and cuDNN)"
        )
    return [CPU]


def expected_provider(options: RunnerOptions) -> str:
    """The provider sessions will ask for first (before any model is loaded)."""
    try:
        first = providers_for(options, available_providers())[0]
    except ProviderUnavailable:
        return ""
    return first[0] if isinstance(first, tuple) else str(first)


class OnnxModel:
    """One loaded model. `run` blocks: call it from an executor thread."""

    def __init__(self, config: ModelConfig, options: RunnerOptions) -> None:
        self.config = config
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.intra_op_threads
        # Spinning threads keep cores busy between runs, stealing them from decoding and from
        # the other services on the host.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(config.model_file), so, providers=providers_for(options, available_providers())
        )
        self.provider: str = self.session.get_providers()[0]
        names = {i.name for i in self.session.get_inputs()}
        if "image" not in names or (config.sigma_input and "sigma" not in names):
            raise ValueError(f"{config.key}: the ONNX inputs {sorted(names)} do not match config")

    def run(self, images: np.ndarray, sigmas: np.ndarray | None = None) -> np.ndarray:
        """images: (N, 1, H, W) float32 on [0, 1]; sigmas: (N,) on [0, 1] for σ-input models."""
        feeds = {"image": images}
        if self.config.sigma_input:
            if sigmas is None:
                raise ValueError(f"{self.config.key} needs sigma")
            feeds["sigma"] = sigmas.astype(np.float32, copy=False)
        out: np.ndarray = self.session.run(["denoised"], feeds)[0]
        return out
