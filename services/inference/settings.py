from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.runtime.settings import WorkerSettings


class InferenceSettings(WorkerSettings):
    service_name: str = "inference"
    grpc_port: int = 50054
    metrics_port: int = 9104
    # The model repository: <models_dir>/<name>/<version>/{model.onnx,config.json}.
    models_dir: Path = Path(__file__).parent / "models"
    # Models loaded at start-up (comma-separated in PIXMESH_MODELS); empty loads them all.
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # onnxruntime: "auto" is CUDA when onnxruntime-gpu offers it, else the CPU.
    execution_provider: Literal["auto", "cpu", "cuda"] = "auto"
    # Threads of one onnxruntime run; 0 uses every physical core.
    intra_op_threads: int = Field(default=0, ge=0, le=256)
    # Depth of the models `auto` picks (0: 17 layers on a GPU, 6 on the CPU, where the deep
    # ones cost ~4x more for about 1 dB).
    default_depth: Literal[0, 6, 17] = 0
    # The models `auto` prefers: int8 (quantised copies, faster on CPUs) or fp32; "auto" is
    # int8 on the CPU and fp32 on a GPU.
    precision: Literal["auto", "fp32", "int8"] = "auto"
    # Colour (OPPONENT) denoises chroma planes with σ >= 17.5 at 1/chroma_scale of the width
    # and height (0: 2 on the CPU, a quarter of the work per chroma plane; 1 on a GPU).
    chroma_scale: Literal[0, 1, 2] = 0
    # Self-ensemble: each plane denoised in 8 orientations (flips, quarter turns) and averaged,
    # for 8x the model's work and ~0.1 dB (BENCHMARKS.md, "Denoising"); 0: 8 on a GPU, 1 (off)
    # on the CPU.
    ensemble: Literal[0, 1, 8] = 0
    # Model blend (colour images, `auto`; opt-in): where a plane gets a 17-layer model, the share
    # of it taken from the 6-layer model `auto` picks for the same σ (same passes), for ~1.25x
    # the 17-layer work. 0 (off) by default: on the tuning photos it gained nothing at σ = 25
    # and 50 over the 17-layer models alone (BENCHMARKS.md, issue 9, run 4).
    model_blend: float = Field(default=0.0, ge=0.0, le=1.0)
    # Colour (OPPONENT): the denoised chroma refined by non-local means guided by the denoised
    # colour image (services/inference/refine.py), ~1.4 CPU-seconds per megapixel for ~0.1-0.3 dB
    # on the tuning photos; "auto": with the self-ensemble (the best path), where it costs
    # little beside the 8 passes. Needs full-resolution chroma (CHROMA_SCALE=1, a GPU's default).
    chroma_refine: Literal["auto", "on", "off"] = "auto"
    # Colour: the luma denoised by both 17-layer kinds (σ-input and blind) and averaged, for a
    # third more model work and ~0.1-0.2 dB on the luma (services/inference/service.py,
    # LUMA_PAIR_*); "auto": with the self-ensemble (the best path).
    luma_pair: Literal["auto", "on", "off"] = "auto"

    # Tiles: core side, overlap between neighbouring cores (cross-faded), and the context around
    # each core (0: the model's receptive radius, which makes tiling exact).
    tile_size: int = Field(default=256, ge=16, le=4096)
    tile_overlap: int = Field(default=8, ge=0, le=256)
    tile_halo: int = Field(default=0, ge=0, le=256)
    # Dynamic batching, per model.
    max_batch_size: int = Field(default=4, ge=1, le=256)
    max_queue_delay_us: int = Field(default=2000, ge=0, le=1_000_000)
    model_concurrency: int = Field(default=1, ge=1, le=64)
    # Tiles one operation keeps in flight (bounds its memory whatever the image size).
    tiles_in_flight: int = Field(default=8, ge=1, le=1024)

    # The synchronous Denoise RPC: largest image, and calls at once (then RESOURCE_EXHAUSTED).
    sync_max_pixels: int = Field(default=4_000_000, ge=1)
    sync_concurrency: int = Field(default=4, ge=1, le=256)

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value
