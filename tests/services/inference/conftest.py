"""Fixtures: the real 6-layer models from the repository, loaded once per module, and small
noisy test images. Tiles are made tiny so every image is cut into several of them."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from services.inference.batcher import BatchingOptions
from services.inference.models import ModelManager
from services.inference.runner import RunnerOptions
from services.inference.service import InferenceService, TileOptions
from services.inference.settings import InferenceSettings
from services.runtime.imageprobe import ProbeLimits

MODELS = ("dncnn6-n", "dncnn6-h", "dncnn6-n-int8", "dncnn6-h-int8")
LIMITS = ProbeLimits(max_bytes=10_000_000, max_pixels=1_000_000, max_frames=10)


def scene(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth colour scene (float, 0..255)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack(
        [
            128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 9.0),
            100 + 50 * np.cos(xx / 11.0),
            120 + 40 * np.sin(yy / 6.0),
        ],
        axis=-1,
    )


def add_noise(
    clean: np.ndarray, sigma: float, seed: int = 0, luma_only: bool = False
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (*clean.shape[:2], 1) if luma_only and clean.ndim == 3 else clean.shape
    noisy: np.ndarray = np.clip(clean + rng.normal(0, sigma, shape) + 0.5, 0, 255).astype(np.uint8)
    return noisy


def encode(pixels: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **params)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@contextlib.asynccontextmanager
async def loaded(executor: ThreadPoolExecutor, *names: str) -> AsyncIterator[ModelManager]:
    """A model manager on the CPU with these models loaded, closed on the way out."""
    manager = ModelManager(
        InferenceSettings().models_dir,
        executor,
        RunnerOptions("cpu", intra_op_threads=2),
        BatchingOptions(max_batch_size=4, max_queue_delay_s=0.001),
    )
    await manager.load_many(names)
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture(scope="module")
async def models(executor: ThreadPoolExecutor) -> AsyncIterator[ModelManager]:
    async with loaded(executor, *MODELS) as manager:
        yield manager


@pytest.fixture(scope="module")
def service(models: ModelManager, executor: ThreadPoolExecutor) -> InferenceService:
    return InferenceService(models, executor, LIMITS, TileOptions(size=32, overlap=8))
