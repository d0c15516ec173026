"""The denoising pipeline:

    probe → validate → decode → planes + σ before → choose model → tiles ⇄ batcher → blend
          → recombine + σ after → encode

Decoding, colour conversion, σ estimation and encoding run on the injected bounded executor;
the model runs through its dynamic batcher (on the same executor), so tiles of concurrent tasks
share onnxruntime runs. A stage of several Denoise operations decodes once and encodes once.
Each operation reports the model, σ before/after and the execution provider that ran it, and
per plane (grey; Y, C1, C2 of the opponent space; R, G, B; or BT.601 Y) its σ before/after,
model and resolution. Colour mode AUTO (the default) estimates the opponent planes' noise and
runs OPPONENT when the chroma is noisy, LUMINANCE when it is not (README, "Denoising").
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
from typing import Literal, TypeVar

import numpy as np
from opentelemetry import trace

from pixmesh.common.v1 import job_pb2, operations_pb2
from services.inference import errors, imageio, noise, refine, resample, selection, tiling
from services.inference.imageio import Decoded, Encoded
from services.inference.models import LoadedModel, ModelManager
from services.inference.repository import ModelConfig
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


@dataclass
class _Plane:
    name: str  # "grey", "Y", "C1", "C2", "R", "G", "B"
    data: np.ndarray  # float32, 0..255: what the model denoises (maybe at half resolution)
    sigma_before: float  # estimated, reported (orthonormal scale for opponent planes)
    model_sigma: float  # the estimate on the scale of `data`, for the model
    sigma_scale: float  # a σ asked for (per RGB channel) × this = σ on the scale of `data`
    resolution: float = 1.0  # `data`'s size relative to the image
    denoise: bool = True  # False: the plane's noise is negligible, it is left as it is

    @property
    def kind(self) -> str:
        """For a σ gain per plane kind (ModelConfig.gain): the name, with "@<resolution>" when
        the plane is denoised at reduced resolution ("C1@0.5")."""
        return self.name if self.resolution == 1.0 else f"{self.name}@{self.resolution:g}"


@dataclass(frozen=True)
class _Planes:
    planes: list[_Plane]
    sigma_before: float  # grey: the plane's; colour: per RGB channel
    mode: ColorMode.ValueType  # COLOR_MODE_UNSPECIFIED for grey images
    luma: np.ndarray | None = None  # LUMINANCE: the input's Y, to replace


# AUTO: chroma noise below this share of the luma's (or below CHROMA_MIN_SIGMA) counts as
# negligible, as after a camera's demosaicing and noise reduction: then LUMINANCE is enough.
CHROMA_SHARE = 0.5
CHROMA_MIN_SIGMA = 1.0
# Opponent planes whose σ is below this are left as they are.
MIN_PLANE_SIGMA = 0.5
# Chroma is denoised at reduced resolution (chroma_scale) only from this σ up: below it the
# full-resolution planes keep more colour detail than the coarser denoise gains (PSNR crossed
# between σ = 15 and 20 on bench/denoise.py's colour tuning photos).
CHROMA_REDUCED_FROM_SIGMA = 17.5
Precision = Literal["auto", "fp32", "int8"]
Switch = Literal["auto", "on", "off"]  # a feature forced on or off, or decided by the service
# Geometric self-ensemble: each plane denoised in the 8 orientations of the square (4 quarter
# turns, each also transposed), mapped back and averaged. The models are not rotation
# invariant, so their errors partly average out: a known gain for DnCNN-type models, for 8x
# the model's work (README, "Denoising").
ENSEMBLE_PASSES = 8
# Model blend (opt-in, `blend` > 0): on a colour image where `auto` runs a deeper model on a
# plane, the plane is also denoised by the BLEND_DEPTH model `auto` would pick for it (same σ,
# same passes) and the two outputs are averaged, `blend` being the share of the shallow one,
# for ~1.25x the 17-layer work. Off by default: on bench/denoise.py's colour tuning photos it
# gained nothing at σ = 25 and 50 over the 17-layer models alone (BENCHMARKS.md, issue 9, run 4).
BLEND_DEPTH = 6
# Luma pair (the best path, `luma_pair`): where `auto` gives a colour image's luma a
# LUMA_PAIR_DEPTH-layer model, the luma is also denoised by the same depth's model of the other
# kind (σ-input ↔ blind, the blind one scaled to its training σ), with as many passes, and the
# two are averaged with equal weights. The two kinds err differently (on bench/denoise.py's
# extended tuning crops the blind model led on dark scenes and the σ-input one on bright ones),
# and their mean beat the better of them at σ = 15, 25 and 50 on every set of tuning crops
# (BENCHMARKS.md, issue 9, run 8), for a third more model work (4 planes' passes instead of 3).
LUMA_PAIR_DEPTH = 17
LUMA_PAIR_WEIGHT = 0.5


@dataclass(frozen=True)
class _Blend:
    choice: selection.Choice
    model: LoadedModel
    weight: float  # the share of this model's output in the plane's


class InferenceService:
    def __init__(
        self,
        models: ModelManager,
        executor: Executor,
        limits: ProbeLimits,
        tiles: TileOptions,
        *,
        default_depth: int = 0,
        precision: Precision = "auto",
        chroma_scale: int = 0,
        ensemble: int = 0,
        blend: float = 0.0,
        chroma_refine: Switch = "auto",
        luma_pair: Switch = "auto",
    ) -> None:
        """`precision`: the models `auto` prefers (auto: int8 on a CPU, fp32 on a GPU);
        `chroma_scale`: OPPONENT's chroma planes with σ ≥ CHROMA_REDUCED_FROM_SIGMA are
        denoised at 1/chroma_scale of the image's width and height (0: 2 on a CPU, 1 on a
        GPU); `ensemble`: orientations each plane is denoised in and averaged over (1, or
        ENSEMBLE_PASSES; 0: 8 on a GPU, 1 on a CPU); `blend`: the model blend's share of
        the BLEND_DEPTH model (0: off, the default everywhere); `chroma_refine`: OPPONENT's
        denoised chroma refined by `refine` (auto: with the self-ensemble, the best path; it
        needs the chroma at full resolution); `luma_pair`: the luma pair above (auto: with the
        self-ensemble)."""
        self.models = models
        self.executor = executor
        self.limits = limits
        self.tiles = tiles
        self._default_depth = default_depth
        self._precision = precision
        self._chroma_scale = chroma_scale
        self._ensemble = ensemble
        self._blend = blend
        self._chroma_refine = chroma_refine
        self._luma_pair = luma_pair

    @property
    def default_depth(self) -> int:
        if self._default_depth:
            return self._default_depth
        return 17 if self.models.provider == CUDA else 6

    @property
    def precision(self) -> str:
        if self._precision != "auto":
            return self._precision
        return "fp32" if self.models.provider == CUDA else "int8"

    @property
    def chroma_scale(self) -> int:
        if self._chroma_scale:
            return self._chroma_scale
        return 1 if self.models.provider == CUDA else 2

    @property
    def ensemble(self) -> int:
        if self._ensemble:
            return self._ensemble
        return ENSEMBLE_PASSES if self.models.provider == CUDA else 1

    @property
    def blend(self) -> float:
        return self._blend

    def _best_path(self, switch: Switch) -> bool:
        """A step of the best path: forced on or off, or (auto) with the self-ensemble."""
        return switch == "on" or (switch == "auto" and self.ensemble > 1)

    @property
    def pairs_luma(self) -> bool:
        return self._best_path(self._luma_pair)

    def refines(self, planes: _Planes) -> bool:
        """Whether OPPONENT's denoised chroma gets `refine`'s pass (a best-path step); only
        with all three planes denoised at full resolution."""
        return (
            self._best_path(self._chroma_refine)
            and planes.mode == operations_pb2.Denoise.OPPONENT
            and all(p.denoise and p.resolution == 1.0 for p in planes.planes)
        )

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
            planes = await self._cpu(_prepare, decoded, op.color_mode, self.chroma_scale)
            named = self.models.get(op.model).config if op.model else None
            loaded_configs = [m.config for m in self.models.ready()]
            # Grey images keep the fp32 models unless int8 is asked for: int8 buys colour its
            # speed, and grey images keep their figures of before (int8 costs 0.1-0.2 dB).
            precision = self.precision
            if planes.mode == operations_pb2.Denoise.COLOR_MODE_UNSPECIFIED:
                precision = "fp32" if self._precision == "auto" else self._precision
            work: list[tuple[_Plane, selection.Choice, LoadedModel]] = []
            for plane in planes.planes:
                if not plane.denoise:
                    continue
                plane_op = operations_pb2.Denoise(
                    model=op.model, auto=op.auto, sigma=op.sigma * plane.sigma_scale
                )
                choice = selection.choose(
                    plane_op,
                    plane.model_sigma,
                    loaded_configs,
                    self.default_depth,
                    named,
                    precision,
                    plane=plane.kind,
                )
                work.append((plane, choice, self.models.get(choice.config.name)))
            if not work:  # nothing noisy enough: still run the luma, as asked
                plane = planes.planes[0]
                plane.denoise = True
                plane_op = operations_pb2.Denoise(
                    model=op.model, auto=op.auto, sigma=op.sigma * plane.sigma_scale
                )
                choice = selection.choose(
                    plane_op, plane.model_sigma, loaded_configs, self.default_depth, named,
                    precision, plane=plane.kind,
                )  # fmt: skip
                work.append((plane, choice, self.models.get(choice.config.name)))
            blends: dict[int, _Blend] = {}  # by id(plane)
            if named is None:
                blends = self._blends(planes, work, op, loaded_configs, precision)
            first, first_model = work[0][1], work[0][2]
            span.set_attributes(
                {
                    "pixmesh.model": first.config.key,
                    "pixmesh.execution_provider": first_model.provider,
                    "pixmesh.sigma": first.sigma,
                    "pixmesh.width": decoded.width,
                    "pixmesh.height": decoded.height,
                    "pixmesh.color_mode": ColorMode.Name(planes.mode),
                }
            )
            ok = False
            try:
                passes = self.ensemble
                jobs = [
                    asyncio.create_task(
                        self._denoise_blended(
                            model, plane.data, choice, deadline, passes, blends.get(id(plane))
                        )
                    )
                    for plane, choice, model in work
                ]
                try:
                    outs = await asyncio.gather(*jobs)
                finally:
                    for job in jobs:  # one plane failed: stop the others' tiles too
                        job.cancel()
                for (plane, _, _), out in zip(work, outs, strict=True):
                    plane.data = out
                refined = self.refines(planes)
                if refined:
                    await self._refine_chroma(planes, deadline)
                result, after = await self._cpu(_finish, decoded, planes)
                ok = True
            finally:
                ran = [m for _, _, m in work] + [b.model for b in blends.values()]
                for model in {id(m): m for m in ran}.values():
                    model.stats.record_request(time.monotonic() - started, ok)
        tiles = tiling.plan(decoded.height, decoded.width, self.tiles.size, 0, self.tiles.overlap)
        for plane, choice, model in work:
            plane_tiles = tiling.plan(
                plane.data.shape[0], plane.data.shape[1], self.tiles.size, 0, self.tiles.overlap
            )
            metrics.INFERENCE_TILES(choice.config.name, model.provider).inc(
                len(plane_tiles) * passes
            )
            if (b := blends.get(id(plane))) is not None:
                metrics.INFERENCE_TILES(b.choice.config.name, b.model.provider).inc(
                    len(plane_tiles) * passes
                )
        chosen = {id(plane): choice for plane, choice, _ in work}
        plane_reports = []
        for plane, sigma_after in zip(planes.planes, after, strict=True):
            c = chosen.get(id(plane))
            b = blends.get(id(plane))
            plane_reports.append(
                job_pb2.DenoisePlaneReport(
                    plane=plane.name,
                    sigma_before=round(plane.sigma_before, 3),
                    sigma_after=round(sigma_after, 3),
                    sigma=round(c.sigma / plane.sigma_scale, 3) if c else 0.0,
                    model=c.config.name if c else "",
                    model_version=c.config.version if c else "",
                    resolution=plane.resolution,
                    passes=passes if c else 0,
                    blend_model=b.choice.config.name if b else "",
                    blend_model_version=b.choice.config.version if b else "",
                    blend_weight=b.weight if b else 0.0,
                )
            )
        report = job_pb2.DenoiseReport(
            model=first.config.name,
            model_version=first.config.version,
            sigma=round(first.sigma / work[0][0].sigma_scale, 3),
            sigma_before=round(planes.sigma_before, 3),
            sigma_after=round(_summary(planes.mode, after), 3),
            execution_provider=first_model.provider,
            color_mode=planes.mode,
            tiles=len(tiles),
            seconds=time.monotonic() - started,
            planes=plane_reports,
            chroma_refinement=refine.DESCRIPTION if refined else "",
        )
        return result, report

    def _blends(
        self,
        planes: _Planes,
        work: Sequence[tuple[_Plane, selection.Choice, LoadedModel]],
        op: operations_pb2.Denoise,
        loaded: Sequence[ModelConfig],
        precision: str,
    ) -> dict[int, _Blend]:
        """Second models (colour images, models chosen by `auto`): the luma pair (above) and
        the opt-in model blend, for each plane given a model deeper than BLEND_DEPTH (and not
        paired), the BLEND_DEPTH model `auto` picks for the same σ."""
        if planes.mode == operations_pb2.Denoise.COLOR_MODE_UNSPECIFIED:
            return {}  # grey images keep their single-model figures
        blends: dict[int, _Blend] = {}
        shallow = [c for c in loaded if c.depth == BLEND_DEPTH]
        for plane, choice, _ in work:
            plane_op = operations_pb2.Denoise(auto=op.auto, sigma=op.sigma * plane.sigma_scale)
            config = choice.config
            if self.pairs_luma and plane.name == "Y" and config.depth == LUMA_PAIR_DEPTH:
                other = [
                    c for c in loaded
                    if c.depth == config.depth and c.precision == config.precision
                    and c.sigma_input != config.sigma_input
                ]  # fmt: skip
                if other and (config.sigma_input or choice.sigma <= selection.SIGMA_INPUT_MAX):
                    pair = selection.choose(
                        plane_op, plane.model_sigma, other, config.depth, None, precision,
                        plane=plane.kind,
                    )  # fmt: skip
                    model = self.models.get(pair.config.name)
                    blends[id(plane)] = _Blend(pair, model, LUMA_PAIR_WEIGHT)
                    continue
            if self.blend > 0 and shallow and config.depth > BLEND_DEPTH:
                other_choice = selection.choose(
                    plane_op, plane.model_sigma, shallow, BLEND_DEPTH, None, precision, plane=plane.kind
                )  # fmt: skip
                model = self.models.get(other_choice.config.name)
                blends[id(plane)] = _Blend(other_choice, model, self.blend)
        return blends

    async def _refine_chroma(self, planes: _Planes, deadline: float | None) -> None:
        """C1 and C2 replaced by `refine`'s, in row strips on the executor."""
        data = [p.data for p in planes.planes]
        sigma = planes.sigma_before
        with _tracer.start_as_current_span("inference.refine_chroma"):
            jobs = [
                asyncio.ensure_future(self._cpu(refine.chroma_rows, data, sigma, start, end))
                for start, end in refine.strips(data[0].shape[0])
            ]
            try:
                parts = await asyncio.gather(*jobs)
            finally:
                for job in jobs:
                    job.cancel()
        _check(deadline)
        for k in (1, 2):
            planes.planes[k].data = np.concatenate([part[k - 1] for part in parts])

    async def _denoise_blended(
        self,
        model: LoadedModel,
        plane: np.ndarray,
        choice: selection.Choice,
        deadline: float | None,
        passes: int,
        blend: _Blend | None,
    ) -> np.ndarray:
        """The denoised plane; with a blend, (1 - w) × this model's + w × the blend model's."""
        out = await self._denoise_plane(model, plane, choice, deadline, passes)
        if blend is None:
            return out
        other = await self._denoise_plane(blend.model, plane, blend.choice, deadline, passes)
        return await self._cpu(_mix, out, other, blend.weight)

    async def _denoise_plane(
        self,
        model: LoadedModel,
        plane: np.ndarray,
        choice: selection.Choice,
        deadline: float | None,
        passes: int = 1,
    ) -> np.ndarray:
        """The denoised plane; with `passes` > 1, the mean over that many orientations
        (self-ensemble), one orientation at a time so memory stays at one extra plane."""
        if passes <= 1:
            return await self._denoise_once(model, plane, choice, deadline)
        total: np.ndarray | None = None
        for t in range(passes):
            turned = await self._cpu(_orient, plane, t)
            out = await self._denoise_once(model, turned, choice, deadline)
            total = await self._cpu(_accumulate, total, out, t)
        assert total is not None
        total /= np.float32(passes)
        return total

    async def _denoise_once(
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


def _orient(plane: np.ndarray, t: int) -> np.ndarray:
    """Orientation t (0..7) of the plane: t % 4 quarter turns, transposed from 4 up."""
    turned = np.rot90(plane, t % 4)
    return np.ascontiguousarray(turned.T if t >= 4 else turned)


def _accumulate(total: np.ndarray | None, out: np.ndarray, t: int) -> np.ndarray:
    """total + `out` turned back from orientation t (the inverse of `_orient`)."""
    back = np.rot90(out.T if t >= 4 else out, -(t % 4))
    if total is None:
        return np.array(back, dtype=np.float32)  # a copy: `out` may be the caller's
    total += back
    return total


def _mix(out: np.ndarray, other: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) × out + weight × other, in `out` (the caller's own array)."""
    out *= np.float32(1.0 - weight)
    out += np.float32(weight) * other
    return out


def _prepare(decoded: Decoded, mode: ColorMode.ValueType, chroma_scale: int) -> _Planes:
    px = decoded.pixels
    if px.ndim == 2:
        grey = px.astype(np.float32)
        sigma = noise.estimate_sigma(grey)
        plane = _Plane("grey", grey, sigma, sigma, 1.0)
        return _Planes([plane], sigma, operations_pb2.Denoise.COLOR_MODE_UNSPECIFIED)
    if mode == operations_pb2.Denoise.PER_CHANNEL:
        planes = []
        for c, name in enumerate("RGB"):
            p = px[..., c].astype(np.float32)
            s = noise.estimate_sigma(p)
            planes.append(_Plane(name, p, s, s, 1.0))
        before = noise.rgb_sigma([p.sigma_before for p in planes])
        return _Planes(planes, before, mode)
    if mode == operations_pb2.Denoise.LUMINANCE:
        return _luminance(px)
    sigmas = noise.estimate_opponent_sigmas(px)
    if mode != operations_pb2.Denoise.OPPONENT:  # AUTO (the default)
        chroma = max(sigmas[1:])
        if chroma < max(CHROMA_MIN_SIGMA, CHROMA_SHARE * sigmas[0]):
            return _luminance(px)
    planes = []
    for k, (name, p) in enumerate(zip(noise.PLANES, noise.opponent_planes(px), strict=True)):
        scale = float(noise.PLANE_SCALE[k])
        resolution = 1.0
        if k > 0 and chroma_scale > 1 and sigmas[k] >= CHROMA_REDUCED_FROM_SIGMA:
            # White noise averaged over n×n pixels has σ/n: the model gets that σ.
            p = resample.downscale(p, chroma_scale)
            resolution = 1.0 / chroma_scale
            scale *= resolution
        planes.append(
            _Plane(
                name,
                p,
                sigmas[k],
                sigmas[k] * scale,
                scale,
                resolution,
                denoise=sigmas[k] >= MIN_PLANE_SIGMA,
            )
        )
    return _Planes(planes, noise.rgb_sigma(sigmas), operations_pb2.Denoise.OPPONENT)


def _luminance(px: np.ndarray) -> _Planes:
    luma = noise.luminance(px)
    before = noise.estimate_sigma(luma)
    plane = _Plane("Y", luma.copy(), before, before, 1.0)
    return _Planes([plane], before, operations_pb2.Denoise.LUMINANCE, luma)


def _finish(decoded: Decoded, planes: _Planes) -> tuple[Decoded, list[float]]:
    """The denoised image and each plane's σ after."""
    if planes.mode == operations_pb2.Denoise.LUMINANCE:
        assert planes.luma is not None
        pixels = noise.replace_luminance(decoded.pixels, planes.luma, planes.planes[0].data)
        after = [noise.estimate_sigma(noise.luminance(pixels))]
    elif planes.mode == operations_pb2.Denoise.OPPONENT:
        luma = planes.planes[0].data  # Y: always at full resolution
        guides: dict[int, resample.Guide] = {}
        full = []
        for p in planes.planes:
            if p.resolution == 1.0:
                full.append(p.data)
                continue
            n = round(1 / p.resolution)
            if n not in guides:
                guides[n] = resample.guide(luma, n)
            full.append(resample.upscale_guided(p.data, guides[n]))
        pixels = noise.from_opponent(full)
        after = list(noise.estimate_opponent_sigmas(pixels))
    else:
        outs = [p.data for p in planes.planes]
        stacked = outs[0] if len(outs) == 1 else np.stack(outs, axis=-1)
        stacked += 0.5  # in place: the blended planes are not needed any more
        pixels = np.clip(stacked, 0, 255, out=stacked).astype(np.uint8)
        if pixels.ndim == 2:
            after = [noise.estimate_sigma(pixels)]
        else:
            after = [noise.estimate_sigma(pixels[..., c]) for c in range(3)]
    return Decoded(pixels, decoded.alpha, decoded.format, decoded.icc), after


def _summary(mode: ColorMode.ValueType, after: list[float]) -> float:
    """σ after, like σ before: per RGB channel for OPPONENT and PER_CHANNEL."""
    if mode in (operations_pb2.Denoise.OPPONENT, operations_pb2.Denoise.PER_CHANNEL):
        return noise.rgb_sigma(after)
    return after[0]
