"""The inference worker's logic.

The model repository is scanned at start-up. Until a DnCNN model is installed (its own issue),
the repository is empty, `denoise` is reported unavailable (so the gateway rejects it with
FAILED_PRECONDITION before a job exists), and a task that reaches this worker anyway fails
permanently with the same reason. There is never a fake result.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pixmesh.common.v1 import operations_pb2
from pixmesh.events.v1 import events_pb2
from pixmesh.inference.v1 import inference_pb2
from services.inference import errors
from services.runtime.worker import StageResult

log = logging.getLogger(__name__)

NO_MODEL_REASON = "no denoising model is installed in the model repository"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    path: Path
    config: dict[str, object]


def scan_repository(root: Path) -> list[ModelEntry]:
    """Models laid out as <root>/<name>/<version>/config.json (+ the ONNX file it names)."""
    entries: list[ModelEntry] = []
    for config_path in sorted(root.glob("*/*/config.json")):
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError):
            log.warning("unreadable model config", extra={"path": str(config_path)})
            continue
        version_dir = config_path.parent
        entries.append(ModelEntry(version_dir.parent.name, version_dir.name, version_dir, config))
    return entries


class InferenceService:
    def __init__(self, models: list[ModelEntry]) -> None:
        # Loading and serving models is the DnCNN issue; nothing is loaded in this build.
        self.models = models

    def list_models(self) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.ModelInfo(
                    name=m.name,
                    version=m.version,
                    state=inference_pb2.ModelInfo.UNAVAILABLE,
                    reason="model serving is not implemented in this build",
                )
                for m in self.models
            ]
        )

    def capabilities(self) -> operations_pb2.Capabilities:
        return operations_pb2.Capabilities(
            operations=[
                operations_pb2.OperationInfo(
                    name="denoise",
                    service="inference",
                    description="DnCNN denoising (luminance by default).",
                    parameters=[
                        operations_pb2.ParameterInfo(
                            name="model", type="string", description="model name from ListModels"
                        ),
                        operations_pb2.ParameterInfo(
                            name="sigma",
                            type="float",
                            description="noise level on the 0..255 scale",
                            constraint="0..255",
                        ),
                        operations_pb2.ParameterInfo(
                            name="auto", type="bool", description="estimate sigma from the image"
                        ),
                    ],
                    available=False,
                    unavailable_reason=NO_MODEL_REASON,
                )
            ]
        )

    async def process(self, task: events_pb2.Task, data: bytes) -> StageResult:
        raise errors.no_model(NO_MODEL_REASON)
