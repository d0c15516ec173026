"""Model management: load, warm up, serve and unload the repository's models.

Like Triton in explicit mode: the models named at start-up (all by default) are loaded before
the service reports SERVING, and LoadModel/UnloadModel change the set at run time. A model is
READY only after its checksum matched its config, its onnxruntime session was created and one
warm-up batch ran; anything that goes wrong leaves it UNAVAILABLE with a reason, never half
loaded. Only one version of a model is loaded at a time (loading another replaces it once the
new one is ready). Unloading lets queued tiles finish first.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.inference import errors
from services.inference import repository as repo
from services.inference.batcher import BatchingOptions, DynamicBatcher
from services.inference.repository import ModelConfig, ScannedModel
from services.inference.runner import CUDA, OnnxModel, RunnerOptions, expected_provider
from services.inference.stats import ModelStats

log = logging.getLogger(__name__)

# A warm-up tile: big enough to initialise every kernel, small enough for a fast start on CPU.
# On a GPU the real tile shape is used, so cuDNN picks its algorithms before the first task.
CPU_WARMUP_SIDE = 48


class State(enum.Enum):
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    READY = "READY"


@dataclass
class LoadedModel:
    config: ModelConfig
    model: OnnxModel
    batcher: DynamicBatcher
    stats: ModelStats
    provider: str
    load_seconds: float


@dataclass
class ModelStatus:
    name: str
    version: str
    state: State
    reason: str = ""
    config: ModelConfig | None = None
    loaded: LoadedModel | None = None
    versions: list[str] = field(default_factory=list)


class ModelManager:
    def __init__(
        self,
        root: Path,
        executor: Executor,
        runner: RunnerOptions,
        batching: BatchingOptions,
        *,
        warmup_side: int = 0,
    ) -> None:
        """`warmup_side`: tile side for warm-up on a GPU (0: a small CPU tile everywhere)."""
        self.root = root
        self.executor = executor
        self.runner = runner
        self.batching = batching
        self.warmup_side = warmup_side
        self._scanned: list[ScannedModel] = []
        self._loaded: dict[str, LoadedModel] = {}
        self._state: dict[str, tuple[State, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.rescan()

    # ---- repository ---------------------------------------------------------------------

    def rescan(self) -> None:
        self._scanned = repo.scan(self.root)

    @property
    def names(self) -> list[str]:
        return sorted({m.name for m in self._scanned} | set(self._loaded))

    def _versions(self, name: str) -> list[ScannedModel]:
        return [m for m in self._scanned if m.name == name]

    # ---- load / unload --------------------------------------------------------------------

    async def load_many(self, names: Sequence[str]) -> None:
        """Load at start-up; a model that fails stays UNAVAILABLE (logged), the others load."""
        for name in names or self.names:
            try:
                await self.load(name)
            except errors.ServiceError as exc:
                log.error("model not loaded", extra={"model": name, "reason": exc.message})

    async def load(self, name: str, version: str = "") -> LoadedModel:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            self.rescan()
            versions = self._versions(name)
            if not versions:
                raise errors.unknown_model(name)
            chosen = next((m for m in versions if m.version == version), None) if version else None
            if version and chosen is None:
                raise errors.unknown_model(f"{name}/{version}")
            chosen = chosen or versions[-1]
            previous = self._loaded.get(name)
            self._state[name] = (State.LOADING, "")
            try:
                loaded = await self._load(chosen)
            except errors.ServiceError as exc:
                if previous is not None:  # the old version keeps serving
                    self._state[name] = (State.READY, "")
                else:
                    self._state[name] = (State.UNAVAILABLE, exc.message)
                raise
            self._loaded[name] = loaded
            self._state[name] = (State.READY, "")
            log.info(
                "model ready",
                extra={
                    "model": loaded.config.key,
                    "provider": loaded.provider,
                    "load_s": round(loaded.load_seconds, 3),
                },
            )
        if previous is not None:
            await previous.batcher.close()
        return loaded

    async def _load(self, scanned: ScannedModel) -> LoadedModel:
        if scanned.config is None:
            raise errors.load_failed(f"{scanned.name}/{scanned.version}", scanned.error)
        config = scanned.config
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self.executor, self._open, config)
        except errors.ServiceError:
            raise
        except Exception as exc:
            log.exception("cannot load model", extra={"model": config.key})
            raise errors.load_failed(config.key, f"onnxruntime could not load it: {exc}") from exc
        stats = ModelStats()
        batcher = DynamicBatcher(model, self.executor, stats, self.batching)
        batcher.start()
        return LoadedModel(
            config, model, batcher, stats, model.provider, time.monotonic() - started
        )

    def _open(self, config: ModelConfig) -> OnnxModel:
        """Checksum, session, warm-up: blocking, on the executor."""
        if not config.model_file.is_file():
            raise errors.load_failed(config.key, f"{config.file} is missing")
        if repo.file_sha256(config.model_file) != config.sha256:
            raise errors.load_failed(config.key, f"{config.file} does not match its sha256")
        model = OnnxModel(config, self.runner)
        side = self.warmup_side if model.provider == CUDA and self.warmup_side else 0
        side = side + 2 * config.receptive_radius if side else CPU_WARMUP_SIDE
        batch = self.batching.max_batch_size if model.provider == CUDA else 1
        images = np.full((batch, 1, side, side), 0.5, np.float32)
        model.run(images, np.full(batch, 0.1, np.float32))
        return model

    async def unload(self, name: str) -> None:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            loaded = self._loaded.pop(name, None)
            if loaded is None:
                if name not in self.names:
                    raise errors.unknown_model(name)
                raise errors.not_loaded(name, self.reason(name))
            self._state[name] = (State.UNAVAILABLE, "unloaded")
        await loaded.batcher.close()
        log.info("model unloaded", extra={"model": loaded.config.key})

    async def close(self) -> None:
        for name in list(self._loaded):
            loaded = self._loaded.pop(name)
            await loaded.batcher.close()

    # ---- queries ------------------------------------------------------------------------

    def get(self, name: str) -> LoadedModel:
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        if name not in self.names:
            raise errors.unknown_model(name)
        raise errors.not_loaded(name, self.reason(name))

    def ready(self) -> list[LoadedModel]:
        return [self._loaded[n] for n in sorted(self._loaded)]

    def is_ready(self, name: str, version: str = "") -> bool:
        loaded = self._loaded.get(name)
        return loaded is not None and (not version or loaded.config.version == version)

    def reason(self, name: str) -> str:
        state, reason = self._state.get(name, (State.UNAVAILABLE, "not loaded"))
        if state is State.LOADING:
            return "loading"
        return reason or "not loaded"

    def status(self, name: str) -> ModelStatus:
        versions = self._versions(name)
        loaded = self._loaded.get(name)
        config: ModelConfig | None = None
        if loaded is not None:
            state, reason, config = State.READY, "", loaded.config
        else:
            state, reason = self._state.get(name, (State.UNAVAILABLE, "not loaded"))
            latest = versions[-1] if versions else None
            config = latest.config if latest else None
            if latest is not None and latest.config is None and not reason:
                reason = latest.error
        version = config.version if config else (versions[-1].version if versions else "")
        return ModelStatus(
            name,
            version,
            state,
            reason,
            config,
            loaded,
            [m.version for m in versions],
        )

    def statuses(self) -> list[ModelStatus]:
        return [self.status(n) for n in self.names]

    def config(self, name: str, version: str = "") -> ModelConfig:
        """The loaded version's config, else the named or latest version's on disk."""
        loaded = self._loaded.get(name)
        if loaded is not None and (not version or loaded.config.version == version):
            return loaded.config
        versions = self._versions(name)
        match = [m for m in versions if not version or m.version == version]
        if not match:
            raise errors.unknown_model(f"{name}/{version}" if version else name)
        if match[-1].config is None:
            raise errors.not_loaded(name, match[-1].error)
        config = match[-1].config
        assert config is not None
        return config

    @property
    def provider(self) -> str:
        """The provider of the loaded models, or the one they would get."""
        for loaded in self._loaded.values():
            return loaded.provider
        return expected_provider(self.runner)
