"""Which model denoises an image, and at what noise level.

- `model` named: that model. A σ-input model gets the σ asked for, else the estimate. A blind
  model asked for a σ other than its training level gets the image scaled by σ_model/σ, which
  scales the noise to what it was trained on (undone on its output); without a σ it runs as is.
- no model (`auto`, or nothing set): σ is the one asked for, else the estimate; the model is
  the one of the default depth (6 layers on CPU, 17 on a GPU) whose config `sigma_range`
  contains σ; if none does, the one trained nearest to σ; if that depth has no model loaded,
  the other depth's. The ranges were chosen on the tuning photos of bench/denoise.py, never on
  its held-out photos. Where models of the preferred `precision` are loaded (int8 on a CPU:
  the quantised copies, ~3.5x faster for < 0.05 dB), `auto` picks among those only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from services.inference import errors
from services.inference.repository import ModelConfig

# σ-input models were trained up to σ = 0.2 on [0, 1]; far beyond, extrapolation is unsafe.
SIGMA_INPUT_MAX = 0.2 * 255
# Do not scale an image by more than this to match a blind model's training level.
MAX_SCALE = 4.0


@dataclass(frozen=True)
class Choice:
    config: ModelConfig
    sigma: float  # 0..255, what the model works with (given, or the estimate)
    model_sigma: float  # 0..255, fed to a σ-input model (0 for blind ones)
    scale: float  # the image is multiplied by this before the model and divided after


def validate(params: operations_pb2.Denoise, path: str = "denoise") -> None:
    """Denoise's proto rules (pixmesh.rules: the same check as the gateway's and the SDK's)."""
    found = rules.violations(params, path)
    if found:
        raise errors.bad_parameter(found[0].field, found[0].description)


def choose(
    params: operations_pb2.Denoise,
    estimated: float,
    loaded: Sequence[ModelConfig],
    default_depth: int,
    named: ModelConfig | None = None,
    precision: str = "",
    plane: str = "",
) -> Choice:
    """`named` is the loaded config of `params.model` (the caller resolves it); `precision`,
    when models of it are loaded, restricts `auto` to them; `plane`: the kind of plane
    denoised ("Y", "C1", ...), for a σ gain per plane kind (ModelConfig.gain)."""
    sigma = float(params.sigma) if params.sigma > 0 else estimated
    if named is not None:
        return _for_model(named, sigma, params.sigma > 0, plane)
    if not loaded:
        raise errors.no_model("no denoising model is loaded")
    preferred = [c for c in loaded if c.precision == precision]
    loaded = preferred or loaded
    depths = sorted({c.depth for c in loaded}, key=lambda d: (d != default_depth, d))
    for depth in depths:
        family = [c for c in loaded if c.depth == depth]
        inside = [c for c in family if c.sigma_range[0] <= sigma < c.sigma_range[1]]
        if inside:
            return _for_model(inside[0], sigma, True, plane)
        return _for_model(min(family, key=lambda c: _distance(c, sigma)), sigma, True, plane)
    raise AssertionError("unreachable: `loaded` is not empty")


def _distance(config: ModelConfig, sigma: float) -> float:
    if config.sigma_input:
        return max(0.0, sigma - SIGMA_INPUT_MAX)
    assert config.trained_sigma is not None
    return abs(config.trained_sigma - sigma)


def _for_model(config: ModelConfig, sigma: float, explicit_sigma: bool, plane: str = "") -> Choice:
    if config.sigma_input:  # sigma_gain: an int8 copy's calibration (repository.ModelConfig)
        return Choice(config, sigma, min(sigma * config.gain(plane), SIGMA_INPUT_MAX), 1.0)
    assert config.trained_sigma is not None
    scale = 1.0
    if explicit_sigma and sigma > 0:
        scale = min(MAX_SCALE, max(1 / MAX_SCALE, config.trained_sigma / sigma))
    return Choice(config, sigma, 0.0, scale)
