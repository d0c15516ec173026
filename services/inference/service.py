"""The denoising pipeline:

    probe → validate → decode → planes + σ before → choose model → tiles ⇄ batcher → blend
          → recombine + σ after → encode

Decoding, colour conversion, σ estimation and encoding run on the injected bounded executor;
the model runs through its dynamic batcher (on the same executor), so tiles of concurrent tasks
share onnxruntime runs. A stage of several Denoise operations decodes once and encodes once.
Each operation reports the model, σ before/after and the execution provider that ran it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from opentelemetry import trace

from pixmesh.common.v1 import job_pb2, operations_pb2
from services.inference import errors, imageio, noise, selection, tiling
from services.inference.imageio import Decoded, Encoded
from services.inference.models import LoadedModel, ModelManager
from services.inference.runner import CUDA
from services.runtime import metrics
from services.runtime.imageprobe import Format, ProbeLimits

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
T = TypeVar("T")

ColorMode = operations_pb2.Denoise.ColorMode


@dataclass(frozen=True)
class TileOptions:
    size: int = 256
    overlap: int = 8
    halo: int = 0  # 0: the model's receptive radius (exact)
    in_flight: int = 8


@dataclass(frozen=True)
class DenoiseOutput:
    image: Encoded
    reports: list[job_pb2.OperationReport]


@dataclass(frozen=True)
class _Planes:
    planes: list[np.ndarray]  # float32, 0..255: what the model denoises
    luma: np.ndarray  # float32 luminance (or grey) of the input, for σ estimates
    sigma_before: float  # on luminance
    model_sigma: float  # on the planes the model sees
    mode: ColorMode.ValueType  # COLOR_MODE_UNSPECIFIED for grey images


class InferenceService:
    def __init__(
        self,
        models: ModelManager,
        executor: Executor,
        limits: ProbeLimits,
        tiles: TileOptions,
        *,
        default_depth: int = 0,
    ) -> None:
        self.models = models
        self.executor = executor
        self.limits = limits
        self.tiles = tiles
        self._default_depth = default_depth

    @property
    def default_depth(self) -> int:
        if self._default_depth:
            return self._default_depth
        return 17 if self.models.provider == CUDA else 6

    # ---- entry points ---------------------------------------------------------------------

    async def denoise(
        self,
        data: bytes,
        operations: Sequence[operations_pb2.Denoise],
        *,
        deadline: float | None = None,
        output_format: Format | None = None,
        max_pixels: int | None = None,
    ) -> DenoiseOutput:
        """Run Denoise operations on an encoded image; `deadline` is on time.monotonic()."""
        if output_format and output_format not in imageio.WRITABLE_FORMATS:
            raise errors.bad_parameter("format", "must be JPEG, PNG, WEBP or TIFF")
        for i, op in enumerate(operations):
            selection.validate(op, f"operations[{i}].denoise")
            if op.model:
                self.models.get(op.model)  # unknown or unloaded: fail before decoding
        if not self.models.ready():
            raise errors.no_model("no denoising model is loaded")
        if max_pixels is not None:
            header = await self._cpu(imageio.probe, data, self.limits)
            if header.width * header.height > max_pixels:
                raise errors.too_large_for_sync(header.width * header.height, max_pixels)
        decoded = await self._cpu(imageio.decode, data, self.limits)
        reports = []
        for i, op in enumerate(operations):
            _check(deadline)
            decoded, report = await self._one(decoded, op, deadline)
            reports.append(job_pb2.OperationReport(index=i, denoise=report))
        _check(deadline)
        fmt = imageio.output_format(decoded.format, output_format)
        encoded = await self._cpu(imageio.encode, decoded.pixels, decoded.alpha, fmt, decoded.icc)
        return DenoiseOutput(encoded, reports)

    # ---- one operation --------------------------------------------------------------------

    async def _one(
        self, decoded: Decoded, op: operations_pb2.Denoise, deadline: float | None
    ) -> tuple[Decoded, job_pb2.DenoiseReport]:
        started = time.monotonic()
        with _tracer.start_as_current_span("inference.denoise") as span:
            planes = await self._cpu(_prepare, decoded, op.color_mode)
            named = self.models.get(op.model).config if op.model else None
            loaded_configs = [m.config for m in self.models.ready()]
            choice = selection.choose(
                op, planes.model_sigma, loaded_configs, self.default_depth, named
            )
            model = self.models.get(choice.config.name)
            span.set_attributes(
                {
                    "pixmesh.model": choice.config.key,
                    "pixmesh.execution_provider": model.provider,
                    "pixmesh.sigma": choice.sigma,
                    "pixmesh.width": decoded.width,
                    "pixmesh.height": decoded.height,
                }
            )
            ok = False
            try:
                jobs = [
                    asyncio.create_task(self._denoise_plane(model, p, choice, deadline))
                    for p in planes.planes
                ]
                try:
                    outs = await asyncio.gather(*jobs)
                finally:
                    for job in jobs:  # one plane failed: stop the others' tiles too
                        job.cancel()
                result, sigma_after = await self._cpu(_finish, decoded, planes, list(outs))
                ok = True
            finally:
                model.stats.record_request(time.monotonic() - started, ok)
        tiles = tiling.plan(decoded.height, decoded.width, self.tiles.size, 0, self.tiles.overlap)
        metrics.INFERENCE_TILES(choice.config.name, model.provider).inc(
            len(tiles) * len(planes.planes)
        )
        report = job_pb2.DenoiseReport(
            model=choice.config.name,
            model_version=choice.config.version,
            sigma=round(choice.sigma, 3),
            sigma_before=round(planes.sigma_before, 3),
            sigma_after=round(sigma_after, 3),
            execution_provider=model.provider,
            color_mode=planes.mode,
            tiles=len(tiles),
            seconds=time.monotonic() - started,
        )
        return result, report

    async def _denoise_plane(
        self,
        model: LoadedModel,
        plane: np.ndarray,
        choice: selection.Choice,
        deadline: float | None,
    ) -> np.ndarray:
        halo = self.tiles.halo or model.config.receptive_radius
        plan = tiling.plan(
            plane.shape[0], plane.shape[1], self.tiles.size, halo, self.tiles.overlap
        )
        blender = tiling.Blender(plan)
        gain = np.float32(choice.scale / 255.0)
        sigma = choice.model_sigma / 255.0
        room = asyncio.Semaphore(self.tiles.in_flight)

        async def one(tile: tiling.Tile) -> None:
            try:
                window = tiling.window(plane, tile, halo)
                window *= gain
                out = await model.batcher.infer(window, sigma)
                blender.add(tile, out / gain)
            finally:
                room.release()

        pending: set[asyncio.Task[None]] = set()
        try:
            for tile in plan.tiles():
                await room.acquire()
                for done in [t for t in pending if t.done()]:
                    pending.discard(done)
                    done.result()  # re-raise a failed tile now
                _check(deadline)
                pending.add(asyncio.create_task(one(tile)))
            await asyncio.gather(*pending)
        finally:
            for t in pending:
                t.cancel()
        return blender.out

    async def _cpu(self, fn: Callable[..., T], *args: object) -> T:
        # Context copied so spans opened in `fn` join the caller's trace.
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)


def _check(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise errors.deadline()


def _prepare(decoded: Decoded, mode: ColorMode.ValueType) -> _Planes:
    px = decoded.pixels
    if px.ndim == 2:
        grey = px.astype(np.float32)
        sigma = noise.estimate_sigma(grey)
        return _Planes([grey], grey, sigma, sigma, operations_pb2.Denoise.COLOR_MODE_UNSPECIFIED)
    luma = noise.luminance(px)
    before = noise.estimate_sigma(luma)
    if mode == operations_pb2.Denoise.PER_CHANNEL:
        planes = [px[..., c].astype(np.float32) for c in range(3)]
        # The model sees R, G and B, whose noise is larger than luminance's: estimate on them.
        model_sigma = float(np.mean([noise.estimate_sigma(p) for p in planes]))
        return _Planes(planes, luma, before, model_sigma, mode)
    return _Planes([luma], luma, before, before, operations_pb2.Denoise.LUMINANCE)


def _finish(decoded: Decoded, planes: _Planes, outs: list[np.ndarray]) -> tuple[Decoded, float]:
    if planes.mode == operations_pb2.Denoise.LUMINANCE:
        pixels = noise.replace_luminance(decoded.pixels, planes.luma, outs[0])
    else:
        stacked = outs[0] if len(outs) == 1 else np.stack(outs, axis=-1)
        stacked += 0.5  # in place: the blended planes are not needed any more
        pixels = np.clip(stacked, 0, 255, out=stacked).astype(np.uint8)
    luma = pixels if pixels.ndim == 2 else noise.luminance(pixels)
    result = Decoded(pixels, decoded.alpha, decoded.format, decoded.icc)
    return result, noise.estimate_sigma(luma)
