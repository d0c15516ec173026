"""The model repository on disk, laid out like Triton's:

    <root>/<name>/<version>/config.json   what the model is (inputs, σ range, sha256, source)
    <root>/<name>/<version>/model.onnx    the file config.json names

`scan` only reads configs; a config that cannot be parsed is still listed (with the reason) so
ListModels can say why a model is unavailable instead of hiding it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelConfig:
    name: str
    version: str
    path: Path  # the version folder
    file: str
    sha256: str
    description: str
    depth: int
    receptive_radius: int
    sigma_input: bool
    trained_sigma: float | None  # 0..255; None for models that take σ as an input
    sigma_range: tuple[float, float]  # 0..255: the noise levels `auto` may use this model for
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str = "onnxruntime_onnx"
    # "fp32", or "int8" for a quantised copy of an fp32 model (faster on CPUs, same σ bands).
    precision: str = "fp32"
    # σ-input models: the σ they are given is multiplied by this (an int8 copy whose response to
    # σ quantisation weakened is calibrated back on the tuning photos; 1 for the fp32 models).
    sigma_gain: float = 1.0
    # ... and per plane kind where it differs ("Y", "C1", "C2", "grey", "R", ...: the service's
    # plane names): config.json's `plane_sigma_gains`, sorted pairs.
    plane_sigma_gains: tuple[tuple[str, float], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def gain(self, plane: str = "") -> float:
        """The σ gain for a plane of this kind (`sigma_gain` unless the config names it)."""
        return dict(self.plane_sigma_gains).get(plane, self.sigma_gain)

    @property
    def model_file(self) -> Path:
        return self.path / self.file

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class ScannedModel:
    name: str
    version: str
    path: Path
    config: ModelConfig | None
    error: str = ""  # why the config is unusable


class ConfigError(ValueError):
    pass


def parse_config(version_dir: Path, data: dict[str, Any]) -> ModelConfig:
    try:
        lo, hi = (float(v) for v in data["sigma_range"])
        trained = data.get("trained_sigma")
        return ModelConfig(
            name=str(data["name"]),
            version=str(data["version"]),
            path=version_dir,
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            description=str(data.get("description", "")),
            depth=int(data["architecture"]["depth"]),
            receptive_radius=int(data["receptive_radius"]),
            sigma_input=bool(data["sigma_input"]),
            trained_sigma=None if trained is None else float(trained),
            sigma_range=(lo, hi),
            inputs=tuple(_tensor(t) for t in data["inputs"]),
            outputs=tuple(_tensor(t) for t in data["outputs"]),
            platform=str(data.get("platform", "onnxruntime_onnx")),
            precision=str(data.get("precision", "fp32")),
            sigma_gain=float(data.get("sigma_gain", 1.0)),
            plane_sigma_gains=tuple(
                sorted(
                    (str(k), float(v)) for k, v in dict(data.get("plane_sigma_gains", {})).items()
                )
            ),
            raw=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config.json: {exc!r}") from exc


def _tensor(spec: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        str(spec["name"]), str(spec["datatype"]), tuple(int(d) for d in spec["shape"])
    )


def scan(root: Path) -> list[ScannedModel]:
    """Every <name>/<version>/config.json under `root`, sorted by name then numeric version."""
    found: list[ScannedModel] = []
    for config_path in root.glob("*/*/config.json"):
        version_dir = config_path.parent
        name, version = version_dir.parent.name, version_dir.name
        try:
            config = parse_config(version_dir, json.loads(config_path.read_text()))
            if (config.name, config.version) != (name, version):
                raise ConfigError(f"config names {config.key}, folder is {name}/{version}")
        except (OSError, ValueError) as exc:
            log.warning("unusable model config", extra={"path": str(config_path)})
            found.append(ScannedModel(name, version, version_dir, None, str(exc)))
            continue
        found.append(ScannedModel(name, version, version_dir, config))
    return sorted(found, key=lambda m: (m.name, _version_key(m.version)))


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def latest(models: list[ScannedModel], name: str) -> ScannedModel | None:
    """The highest version of `name` (Triton's default "latest" policy)."""
    versions = [m for m in models if m.name == name]
    return versions[-1] if versions else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
