from __future__ import annotations

from pathlib import Path

from services.runtime.settings import WorkerSettings


class InferenceSettings(WorkerSettings):
    service_name: str = "inference"
    grpc_port: int = 50054
    # The model repository: <models_dir>/<name>/<version>/{model.onnx,config.json}.
    models_dir: Path = Path(__file__).parent / "models"
