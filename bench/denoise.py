"""Denoising benchmarks: they print tables, they do not pass or fail. Results: BENCHMARKS.md.

    .venv/bin/python -m bench.denoise                 # quality + speed, ~10 minutes on 2 cores
    .venv/bin/python -m bench.denoise --only quality  # or: speed, memory, tune
    .venv/bin/python -m bench.denoise --quick         # smaller crops, no BM3D: a smoke run
    python -m bench.denoise --only speed --provider cuda --side 2048   # on a GPU (onnxruntime-gpu)

Needs the bench packages: scikit-image (photos, PSNR/SSIM), opencv-python-headless (NLM),
bm3d (optional; its row is skipped when missing).

Photos are scikit-image's natural photos, as grey images (DnCNN's published figures are on
grey BSD68). They are split once: the TUNING photos choose every parameter (the classical
baselines' strengths and the σ bands `auto` uses, in services/inference/convert.py); the
HELD_OUT photos are used for the reported figures only, never to choose anything.

(a) quality  Gaussian noise σ = 15, 25, 50 added in floating point and not clipped (as in the
             DnCNN paper), seeded. PSNR and SSIM of noisy → denoised per method: Gaussian blur,
             median, OpenCV fastNlMeans (8-bit input, its API), BM3D (knows the true σ), every
             DnCNN model (blind ones as they are; σ-input ones given the true σ) and `auto`, the
             service's own path: 8-bit PNG in, σ estimated, model chosen, tiled, PNG out.
(b) speed    Megapixels/s of each model through a bare onnxruntime session on the service's
             tiles (core 256 + the model's receptive radius on each side), one tile per run and
             in batches of the service's batch size (stacked before the clock starts), then
             through the service (tiling, dynamic batcher, blending) on the same image: the
             overhead, against both (the service batches: on a GPU only the batched bare run is
             the same work). Also end to end (decode, σ estimates, encode included).
             `--provider cuda` runs all of it on the GPU (as the service does when
             onnxruntime-gpu is installed: its warm-up at the real tile side included).
(c) memory   Peak RSS of a fresh process while it denoises one grey PNG of growing size (the
             model loaded and the PNG in memory before): the model's activations stay
             tile-sized, so the growth per pixel is the image's own buffers only.
(d) tune     The table the `auto` bands were chosen from, on the TUNING photos only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from pixmesh.common.v1.operations_pb2 import Denoise
from services.inference import noise, refine, selection, tiling
from services.inference.batcher import BatchingOptions
from services.inference.models import ModelManager
from services.inference.repository import scan
from services.inference.runner import OnnxModel, RunnerOptions
from services.inference.service import (
    ENSEMBLE_PASSES,
    InferenceService,
    TileOptions,
    _accumulate,
    _orient,
)
from services.inference.settings import InferenceSettings
from services.runtime.imageprobe import ProbeLimits

MODELS_DIR = InferenceSettings().models_dir
TUNING = ("coins", "chelsea", "rocket")
HELD_OUT = ("camera", "astronaut", "coffee", "motorcycle_left", "brick")
SIGMAS = (15, 25, 50)
PUBLISHED_DNCNN_25 = 29.23  # DnCNN-S, σ = 25, BSD68 (Zhang et al. 2017, Table II)
LIMITS = ProbeLimits(200_000_000, 100_000_000, 10)
# The sessions' execution provider (--provider); the memory part always measures the CPU.
RUNNER = RunnerOptions("cpu")


# ---- photos ---------------------------------------------------------------------------------


def photo(name: str, crop: int) -> np.ndarray:
    """A scikit-image photo as grey float64 on [0, 1], centre-cropped to at most crop x crop."""
    from skimage import color, data

    img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    if img.ndim == 3:
        img = np.round(color.rgb2gray(img[..., :3]) * 255)
    img = np.asarray(img, np.float64) / 255.0
    h, w = img.shape
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    return img[top : top + crop, left : left + crop]


def noisy_version(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return clean + rng.normal(0.0, sigma / 255.0, clean.shape)


def psnr(clean: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((clean - np.clip(x, 0, 1)) ** 2))
    return 10 * np.log10(1.0 / mse)


def ssim(clean: np.ndarray, x: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(clean, np.clip(x, 0, 1), data_range=1.0))


# ---- methods --------------------------------------------------------------------------------

Method = Callable[[np.ndarray, float], np.ndarray]  # (noisy on [0, 1], true σ on 0..255)


def gaussian(strength: float) -> Method:
    import cv2

    def run(x: np.ndarray, sigma: float) -> np.ndarray:
        out: np.ndarray = cv2.GaussianBlur(x, (0, 0), strength, borderType=cv2.BORDER_REFLECT)
        return out

    return run


def median(size: int) -> Method:
    from scipy.ndimage import median_filter

    def run(x: np.ndarray, sigma: float) -> np.ndarray:
        out: np.ndarray = median_filter(x, size=size, mode="mirror")
        return out

    return run


def nlm(h_factor: float) -> Method:
    import cv2

    def run(x: np.ndarray, sigma: float) -> np.ndarray:
        u8 = np.clip(np.round(x * 255), 0, 255).astype(np.uint8)
        out = cv2.fastNlMeansDenoising(u8, None, h=h_factor * sigma, templateWindowSize=7,
                                       searchWindowSize=21)  # fmt: skip
        return np.asarray(out, np.float64) / 255.0

    return run


def bm3d_method() -> Method | None:
    try:
        import bm3d
    except ImportError:
        return None

    def run(x: np.ndarray, sigma: float) -> np.ndarray:
        out: np.ndarray = bm3d.bm3d(x, sigma_psd=sigma / 255.0)
        return out

    return run


class Sessions:
    """One bare onnxruntime session per model (the same options as the service's)."""

    def __init__(self) -> None:
        self.models = {
            m.name: OnnxModel(m.config, RUNNER) for m in scan(MODELS_DIR) if m.config is not None
        }

    def method(self, name: str, scaled: bool = False, sigma_from: str = "true") -> Method:
        model = self.models[name]
        config = model.config

        def run(x: np.ndarray, sigma: float) -> np.ndarray:
            s = sigma if sigma_from == "true" else noise.estimate_sigma(np.clip(x, 0, 1) * 255)
            gain = 1.0
            if scaled and config.trained_sigma:
                gain = config.trained_sigma / s
            img = (x * gain).astype(np.float32)[None, None]
            sig = np.array([min(s, 51.0) / 255.0], np.float32)
            return model.run(img, sig)[0, 0].astype(np.float64) / gain

        return run


def choose_classical(tuning: list[np.ndarray], sigma: float) -> dict[str, tuple[Method, str]]:
    """Each classical method's best setting at this σ, on the TUNING photos only."""
    grid: dict[str, list[tuple[str, Method]]] = {
        "gaussian blur": [
            (f"σ_blur={s}", gaussian(s)) for s in (0.5, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5)
        ],
        "median": [(f"{k}x{k}", median(k)) for k in (3, 5, 7)],
        "fastNlMeans": [(f"h={f}σ", nlm(f)) for f in (0.6, 0.8, 1.0, 1.2)],
    }
    chosen = {}
    for family, options in grid.items():
        scores = []
        for label, method in options:
            score = np.mean(
                [psnr(c, method(noisy_version(c, sigma, i), sigma)) for i, c in enumerate(tuning)]
            )
            scores.append((score, label, method))
        _, label, method = max(scores, key=lambda t: t[0])
        chosen[family] = (method, label)
    return chosen


# ---- the service path -----------------------------------------------------------------------


@dataclass
class ServicePath:
    executor: ThreadPoolExecutor
    models: ModelManager
    service: InferenceService


async def start_service(
    names: Sequence[str] = (),
    batch: int = 4,
    delay_s: float = 0.002,
    depth: int = 0,
    precision: str = "auto",
    chroma_scale: int = 0,
    tile: int = 256,
    threads: int = 0,
    ensemble: int = 0,
    blend: float = 0.0,
    chroma_refine: str = "auto",
    luma_pair: str = "auto",
) -> ServicePath:
    executor = ThreadPoolExecutor(2)
    manager = ModelManager(
        MODELS_DIR,
        executor,
        RunnerOptions(RUNNER.provider, threads) if threads else RUNNER,
        BatchingOptions(max_batch_size=batch, max_queue_delay_s=delay_s, max_queue=64),
        warmup_side=0 if RUNNER.provider == "cpu" else 256,  # as the service's app does
    )
    await manager.load_many(names)
    service = InferenceService(
        manager,
        executor,
        LIMITS,
        TileOptions(size=tile, overlap=8),
        default_depth=depth,
        precision=precision,  # type: ignore[arg-type]
        chroma_scale=chroma_scale,
        ensemble=ensemble,
        blend=blend,
        chroma_refine=chroma_refine,  # type: ignore[arg-type]
        luma_pair=luma_pair,  # type: ignore[arg-type]
    )
    return ServicePath(executor, manager, service)


def to_png(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.clip(np.round(x * 255), 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


# ---- (a) quality ----------------------------------------------------------------------------


def quality(crop: int, use_bm3d: bool) -> None:
    tuning = [photo(n, crop) for n in TUNING]
    held = {n: photo(n, crop) for n in HELD_OUT}
    sessions = Sessions()
    noisy_by_sigma = {
        sigma: {n: noisy_version(c, sigma, 1000 + i) for i, (n, c) in enumerate(held.items())}
        for sigma in SIGMAS
    }
    autos = {depth: asyncio.run(auto_outputs(noisy_by_sigma, depth)) for depth in (6, 17)}
    bm3d_run = bm3d_method() if use_bm3d else None
    print(f"\n## Quality: held-out photos {', '.join(HELD_OUT)} (grey, centre crops ≤{crop}²)")
    print(f"   tuning photos (parameters only): {', '.join(TUNING)}\n")
    summary: dict[int, dict[str, float]] = {}
    for sigma in SIGMAS:
        classical = choose_classical(tuning, sigma)
        methods: list[tuple[str, Method]] = [
            (f"{fam} ({label})", m) for fam, (m, label) in classical.items()
        ]
        if bm3d_run is not None:
            methods.append(("BM3D (true σ)", bm3d_run))
        for name in sorted(sessions.models, key=lambda n: (len(n), n)):
            kind = "true σ" if sessions.models[name].config.sigma_input else "blind"
            methods.append((f"{name} ({kind})", sessions.method(name)))
        rows: list[tuple[str, float, float, float, float, float]] = []
        noisy = noisy_by_sigma[sigma]
        base_p = np.mean([psnr(held[n], noisy[n]) for n in held])
        base_s = np.mean([ssim(held[n], noisy[n]) for n in held])
        for label, method in methods:
            t0 = time.perf_counter()
            outs = {n: method(noisy[n], sigma) for n in held}
            secs = time.perf_counter() - t0
            p = np.mean([psnr(held[n], outs[n]) for n in held])
            s = np.mean([ssim(held[n], outs[n]) for n in held])
            rows.append((label, base_p, p, base_s, s, secs))
        for depth, auto in autos.items():
            outs, picked, secs = auto[sigma]
            rows.append(
                (
                    f"auto, {depth} layers, service path (8-bit; picked {', '.join(sorted(picked))})",
                    base_p,
                    np.mean([psnr(held[n], outs[n]) for n in held]),
                    base_s,
                    np.mean([ssim(held[n], outs[n]) for n in held]),
                    secs,
                )
            )
        summary[sigma] = {r[0]: r[2] for r in rows}
        print(f"### σ = {sigma}\n")
        print("| method | PSNR noisy → denoised (dB) | SSIM noisy → denoised | time (s) |")
        print("|---|---|---|---|")
        for label, bp, p, bs, s, secs in rows:
            print(f"| {label} | {bp:.2f} → **{p:.2f}** | {bs:.3f} → {s:.3f} | {secs:.1f} |")
        print()
    at25 = summary.get(25, {})
    if at25:
        d17 = {k: v for k, v in at25.items() if k.startswith("dncnn17")}
        best17 = max(d17.items(), key=lambda kv: kv[1])
        classical_best = max((v, k) for k, v in at25.items() if not k.startswith(("dncnn", "auto")))
        print(
            f"σ=25: best DnCNN-17 {best17[0]} {best17[1]:.2f} dB vs published "
            f"{PUBLISHED_DNCNN_25} dB (BSD68): {best17[1] - PUBLISHED_DNCNN_25:+.2f} dB; "
            f"best classical {classical_best[1]} {classical_best[0]:.2f} dB"
        )


async def auto_outputs(
    noisy_by_sigma: dict[int, dict[str, np.ndarray]], depth: int
) -> dict[int, tuple[dict[str, np.ndarray], set[str], float]]:
    """The product: 8-bit PNG through the service, σ estimated, the model chosen by `auto`."""
    sp = await start_service(depth=depth)
    results = {}
    try:
        for sigma, noisy in noisy_by_sigma.items():
            outs, picked = {}, set()
            t0 = time.perf_counter()
            for n, x in noisy.items():
                result = await sp.service.denoise(to_png(x), [Denoise(auto=True)])
                picked.add(result.reports[0].denoise.model)
                outs[n] = np.asarray(Image.open(io.BytesIO(result.image.data)), np.float64) / 255
            results[sigma] = (outs, picked, time.perf_counter() - t0)
    finally:
        await sp.models.close()
        sp.executor.shutdown()
    return results


# ---- (e) colour -----------------------------------------------------------------------------

COLOUR_TUNING = ("chelsea", "rocket")
COLOUR_HELD_OUT = ("astronaut", "coffee", "motorcycle_left")


# Crops of the tuning photos `--only colour --tuning` scores (centre and corners): ten in all,
# more than two centre crops to choose on.
TUNING_CROPS = ("centre", "top left", "top right", "bottom left", "bottom right")


def colour_photo(name: str, crop: int, where: str = "centre") -> np.ndarray:
    """A scikit-image colour photo, uint8 RGB, cropped to at most crop x crop: at its centre
    or a corner (TUNING_CROPS)."""
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    h, w = img.shape[:2]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    if where != "centre":
        top = 0 if where.startswith("top") else max(0, h - crop)
        left = 0 if where.endswith("left") else max(0, w - crop)
    return np.ascontiguousarray(img[top : top + crop, left : left + crop, :3])


def colour_noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Independent Gaussian noise in R, G and B (CBSD68's protocol), then 8 bits (clipped)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def psnr8(clean: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((clean.astype(np.float64) - np.clip(np.round(x), 0, 255)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def plane_psnr(clean: dict[str, np.ndarray], outs: dict[str, np.ndarray]) -> list[float]:
    """PSNR (dB) of each orthonormal opponent plane (Y, C1, C2) over the photos (their squared
    errors pooled). The planes' MSEs average to the RGB MSE (the transform is orthonormal), so
    this says which plane a method's loss is in: a grey model run per plane against CBM3D,
    whose chroma borrows the luma's block matching."""
    sq = np.zeros(3)
    count = 0
    for n, c in clean.items():
        diff = c.astype(np.float64) - np.clip(np.round(outs[n]), 0, 255)
        sq += np.square(diff.reshape(-1, 3) @ noise.OPPONENT.T).sum(axis=0)
        count += diff.shape[0] * diff.shape[1]
    return [float(10 * np.log10(255.0**2 / (v / count))) for v in sq]


ColourMethod = Callable[[np.ndarray, float], np.ndarray]  # (noisy uint8 RGB, true σ) -> RGB


def colour_classical(sigma: float) -> dict[str, tuple[ColourMethod, str]]:
    """Gaussian blur and fastNlMeansDenoisingColored at their best setting for this σ on the
    colour TUNING photos only."""
    import cv2

    def blur(s: float) -> ColourMethod:
        return lambda x, _: cv2.GaussianBlur(x.astype(np.float32), (0, 0), s)

    def nlm_colour(f: float) -> ColourMethod:
        def run(x: np.ndarray, sg: float) -> np.ndarray:
            bgr = np.ascontiguousarray(x[..., ::-1])
            out = cv2.fastNlMeansDenoisingColored(bgr, None, f * sg, f * sg, 7, 21)
            return np.asarray(out[..., ::-1], np.float64)

        return run

    grid: dict[str, list[tuple[str, ColourMethod]]] = {
        "gaussian blur": [(f"σ_blur={b}", blur(b)) for b in (0.6, 0.8, 1.0, 1.3, 1.6, 2.0)],
        "fastNlMeansDenoisingColored": [(f"h=hColor={f}σ", nlm_colour(f)) for f in (0.4, 0.6, 0.8, 1.0)],
    }  # fmt: skip
    tuning = [colour_photo(n, 256) for n in COLOUR_TUNING]
    chosen = {}
    for family, options in grid.items():
        scores = []
        for label, method in options:
            score = np.mean(
                [psnr8(c, method(colour_noisy(c, sigma, 50 + i), sigma)) for i, c in enumerate(tuning)]
            )  # fmt: skip
            scores.append((score, label, method))
        _, label, method = max(scores, key=lambda t: t[0])
        chosen[family] = (method, label)
    return chosen


COLOUR_PATHS: tuple[tuple[str, dict[str, object], Denoise], ...] = (
    ("auto, CPU default (6 layers, int8, chroma at half resolution from σ 17.5)", {},
     Denoise(auto=True)),
    ("sigma given, CPU default", {}, Denoise()),  # sigma filled in per σ below
    ("auto, fp32, chroma at half resolution from σ 17.5", {"precision": "fp32"},
     Denoise(auto=True)),
    ("auto, fp32, full resolution (the float path)", {"precision": "fp32", "chroma_scale": 1},
     Denoise(auto=True)),
    ("auto, 17 layers, fp32, full resolution, self-ensemble x8, luma paired, chroma refined "
     "(the GPU default)",
     {"precision": "fp32", "chroma_scale": 1, "depth": 17, "ensemble": 8}, Denoise(auto=True)),
    ("auto, 17 layers, fp32, full resolution, self-ensemble x8, luma not paired, chroma refined",
     {"precision": "fp32", "chroma_scale": 1, "depth": 17, "ensemble": 8, "luma_pair": "off"},
     Denoise(auto=True)),
    ("auto, 17 layers, fp32, full resolution, self-ensemble x8, luma not paired, chroma not "
     "refined (the GPU default before)",
     {"precision": "fp32", "chroma_scale": 1, "depth": 17, "ensemble": 8, "luma_pair": "off",
      "chroma_refine": "off"}, Denoise(auto=True)),
    # Opt-in (PIXMESH_MODEL_BLEND): 0.1 had the best mean over σ = 15, 25, 50 on the tuning
    # photos (+0.006 dB over 0; BENCHMARKS.md, issue 9, run 4).
    ("auto, 17 + 6 layers blended (6-layer share 0.1, opt-in), fp32, full resolution, "
     "self-ensemble x8, chroma refined",
     {"precision": "fp32", "chroma_scale": 1, "depth": 17, "ensemble": 8, "blend": 0.1,
      "luma_pair": "off"},
     Denoise(auto=True)),
    ("auto, 17 layers, fp32, full resolution, one pass",
     {"precision": "fp32", "chroma_scale": 1, "depth": 17, "ensemble": 1}, Denoise(auto=True)),
    ("auto, 6 layers, fp32, full resolution, self-ensemble x8, chroma refined",
     {"precision": "fp32", "chroma_scale": 1, "ensemble": 8}, Denoise(auto=True)),
    ("auto, 6 layers, fp32, full resolution, self-ensemble x8, chroma not refined",
     {"precision": "fp32", "chroma_scale": 1, "ensemble": 8, "chroma_refine": "off"},
     Denoise(auto=True)),
    ("PER_CHANNEL, auto, fp32 (before)", {"precision": "fp32"},
     Denoise(auto=True, color_mode=Denoise.PER_CHANNEL)),
    ("LUMINANCE, auto, fp32 (the default before)", {"precision": "fp32"},
     Denoise(auto=True, color_mode=Denoise.LUMINANCE)),
)  # fmt: skip


def tuning_crops(crop: int) -> dict[str, np.ndarray]:
    """The tuning photos' TUNING_CROPS by name ("chelsea (top left)", ...)."""
    return {
        f"{n} ({where})": colour_photo(n, crop, where)
        for n in COLOUR_TUNING
        for where in TUNING_CROPS
    }


def colour(crop: int, use_bm3d: bool, paths: Sequence[str] = (), tuning: bool = False) -> None:
    """`paths`: only the pixmesh rows whose label contains one of these (all when empty);
    `tuning`: on the tuning photos' TUNING_CROPS (other seeds), where parameters are chosen,
    instead of the held-out photos."""
    if tuning:
        held = tuning_crops(crop)
        seed = 7000
    else:
        held = {n: colour_photo(n, crop) for n in COLOUR_HELD_OUT}
        seed = 2000
    noisy = {
        sigma: {n: colour_noisy(c, sigma, seed + i) for i, (n, c) in enumerate(held.items())}
        for sigma in SIGMAS
    }
    chosen = [p for p in COLOUR_PATHS if not paths or any(s in p[0] for s in paths)]
    service_rows = asyncio.run(_colour_service(noisy, chosen))
    kind = f"TUNING crops {', '.join(held)}" if tuning else f"held-out photos {', '.join(held)}"
    print(
        f"\n## Colour quality: {kind} (RGB, crops ≤{crop}², noise independent in R, G, B, "
        "clipped to 8 bits); mean PSNR (dB)"
    )
    print(f"   tuning photos (classical settings only): {', '.join(COLOUR_TUNING)}\n")  # fmt: skip
    for sigma in SIGMAS:
        rows: list[tuple[str, dict[str, np.ndarray], float]] = []  # label, outputs, seconds
        for family, (method, label) in colour_classical(sigma).items():
            t0 = time.perf_counter()
            outs = {n: method(noisy[sigma][n], sigma) for n in held}
            rows.append((f"{family} ({label})", outs, time.perf_counter() - t0))
        if use_bm3d:
            import bm3d

            t0 = time.perf_counter()
            outs = {n: bm3d.bm3d_rgb(noisy[sigma][n] / 255.0, sigma / 255.0) * 255 for n in held}
            rows.append(("CBM3D (bm3d_rgb, true σ)", outs, time.perf_counter() - t0))
        for label, (outs_by_sigma, picked, secs) in service_rows.items():
            rows.append((f"{label} [{', '.join(sorted(picked[sigma]))}]", outs_by_sigma[sigma],
                         secs[sigma]))  # fmt: skip
        base = np.mean([psnr8(held[n], noisy[sigma][n]) for n in held])
        print(f"### σ = {sigma} (noisy: {base:.2f} dB)\n")
        print("| method | PSNR (dB) | gain (dB) | Y / C1 / C2 (dB) | time (s) |")
        print("|---|---|---|---|---|")
        for label, outs, secs in rows:
            p = np.mean([psnr8(held[n], outs[n]) for n in held])
            planes = " / ".join(f"{v:.2f}" for v in plane_psnr(held, outs))
            print(f"| {label} | **{p:.2f}** | {p - base:+.2f} | {planes} | {secs:.1f} |")
        print()
        sys.stdout.flush()


async def _colour_service(
    noisy: dict[int, dict[str, np.ndarray]],
    paths: Sequence[tuple[str, dict[str, object], Denoise]] = COLOUR_PATHS,
) -> dict[str, tuple[dict[int, dict[str, np.ndarray]], dict[int, set[str]], dict[int, float]]]:
    results = {}
    for label, options, op in paths:
        sp = await start_service(**options)  # type: ignore[arg-type]
        try:
            outs: dict[int, dict[str, np.ndarray]] = {}
            picked: dict[int, set[str]] = {}
            secs: dict[int, float] = {}
            for sigma, images in noisy.items():
                this = Denoise()
                this.CopyFrom(op)
                if not op.auto:
                    this.sigma = sigma
                outs[sigma], picked[sigma] = {}, set()
                t0 = time.perf_counter()
                for n, x in images.items():
                    result = await sp.service.denoise(_png(x), [this])
                    r = result.reports[0].denoise
                    mode = Denoise.ColorMode.Name(r.color_mode)
                    models = "+".join(p.model or "-" for p in r.planes)
                    picked[sigma].add(f"{mode}: {models}")
                    outs[sigma][n] = np.asarray(Image.open(io.BytesIO(result.image.data)))
                secs[sigma] = time.perf_counter() - t0
            results[label] = (outs, picked, secs)
        finally:
            await sp.models.close()
            sp.executor.shutdown()
    return results


def _png(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(x).save(out, "PNG")
    return out.getvalue()


def sigma_estimates(tuning: bool = False) -> None:
    """The colour σ estimator on the held-out colour photos (whole photos, 8-bit, clipped); with
    `tuning`, on the tuning photos (where its settings are chosen) with other seeds instead."""
    sigmas = (5, 10, 15, 25, 35, 50)
    photos, seed = (COLOUR_TUNING, 4000) if tuning else (COLOUR_HELD_OUT, 3000)
    kind = "TUNING" if tuning else "held-out"
    print(f"\n## σ estimation on colour photos ({kind}; estimate / true σ)\n")
    print("Per opponent plane Y / C1 / C2, then per RGB channel (their RMS, `sigma_before`); "
          "clean: the clean photo's own estimates (absolute).\n")  # fmt: skip
    print("| photo | clean | " + " | ".join(f"σ={s}" for s in sigmas) + " |")
    print("|---|---|" + "---|" * len(sigmas))
    worst_plane = worst_rgb = worst_chroma = 0.0
    for i, name in enumerate(photos):
        clean = colour_photo(name, 100_000)
        cells = ["/".join(f"{e:.1f}" for e in noise.estimate_opponent_sigmas(clean))]
        for s in sigmas:
            est = noise.estimate_opponent_sigmas(colour_noisy(clean, s, seed + i))
            rgb = noise.rgb_sigma(est)
            worst_plane = max(worst_plane, *(abs(e / s - 1) for e in est))
            worst_chroma = max(worst_chroma, *(abs(e / s - 1) for e in est[1:]))
            worst_rgb = max(worst_rgb, abs(rgb / s - 1))
            cells.append("/".join(f"{e / s:.2f}" for e in est) + f" → **{rgb / s:.2f}**")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nlargest error: per RGB channel {worst_rgb:.1%}, chroma planes {worst_chroma:.1%}, "
          f"any plane {worst_plane:.1%}")  # fmt: skip
    from skimage import data

    base = np.asarray(Image.fromarray(data.astronaut()).resize((4000, 3000)), np.float32)
    for s in (5, 25):  # below PCA_BELOW the patch estimator runs too
        x = colour_noisy(base, s, 7)
        t0, c0 = time.perf_counter(), time.process_time()
        est = noise.estimate_opponent_sigmas(x)
        print(f"12 MP (astronaut resized to 4000x3000), σ = {s}: {time.perf_counter() - t0:.2f} s "
              f"wall, {time.process_time() - c0:.2f} s CPU (estimates {est[0]:.1f} / {est[1]:.1f} "
              f"/ {est[2]:.1f})")  # fmt: skip


def colour_speed(side: int, big: int) -> None:
    """CPU time and wall time per colour photo through the service, end to end (PNG in, PNG
    out), each path against the others on the same image in the same run; then one `big`-MP
    photo with the default path alone."""
    from skimage import data

    rng = np.random.default_rng(0)

    def photo_of(w: int, h: int) -> np.ndarray:
        base = np.asarray(Image.fromarray(data.astronaut()).resize((w, h)), np.float32)
        return np.clip(np.round(base + rng.normal(0, 25, base.shape)), 0, 255).astype(np.uint8)

    small = _png(photo_of(side, side))
    mp = side * side / 1e6
    print(f"\n## Colour speed: {side}x{side} RGB ({mp:.2f} MP), σ = 25, CPU, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start\n")  # fmt: skip
    print("| path | wall (s) | CPU (s) | MP/s (wall) | MP/s per CPU-second | vs LUMINANCE fp32 (CPU) "
          "| vs PER_CHANNEL fp32 (CPU) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    paths = [
        ("LUMINANCE fp32 (the default before)", {"precision": "fp32"},
         Denoise(auto=True, color_mode=Denoise.LUMINANCE)),
        ("PER_CHANNEL fp32", {"precision": "fp32"},
         Denoise(auto=True, color_mode=Denoise.PER_CHANNEL)),
        ("auto fp32, full-resolution chroma", {"precision": "fp32", "chroma_scale": 1},
         Denoise(auto=True)),
        ("auto fp32, half-resolution chroma", {"precision": "fp32"}, Denoise(auto=True)),
        ("auto (the default now: int8, half-resolution chroma)", {}, Denoise(auto=True)),
    ]  # fmt: skip
    measured: list[tuple[str, float, float]] = []
    for label, options, op in paths:
        wall, cpu = asyncio.run(_timed(small, op, options))
        measured.append((label, wall, cpu))
    lum, per = measured[0][2], measured[1][2]
    for label, wall, cpu in measured:
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {mp / wall:.3f} | {mp / cpu:.3f} | "
              f"{lum / cpu:.2f}x | {per / cpu:.2f}x |")  # fmt: skip
    sys.stdout.flush()
    print("\nThe default path's settings, same image (tile side; onnxruntime intra-op threads, "
          "0 = every core):\n")  # fmt: skip
    print("| tile | threads | wall (s) | CPU (s) |")
    print("|---|---|---|---|")
    for tile, threads in ((128, 0), (256, 0), (512, 0), (256, 1)):
        wall, cpu = asyncio.run(
            _timed(small, Denoise(auto=True), {"tile": tile, "threads": threads})
        )
        print(f"| {tile} | {threads} | {wall:.1f} | {cpu:.1f} |")
    sys.stdout.flush()
    if big:
        w, h = 4000, big * 1_000_000 // 4000
        wall, cpu = asyncio.run(_timed(_png(photo_of(w, h)), Denoise(auto=True), {}))
        print(
            f"\n{w}x{h} ({w * h / 1e6:.1f} MP) RGB, σ = 25, `auto` (the default): "
            f"{wall:.1f} s wall, {cpu:.1f} s CPU, load average {os.getloadavg()[0]:.2f} after"
        )


async def _timed(png: bytes, op: Denoise, options: dict[str, object]) -> tuple[float, float]:
    sp = await start_service(**options)  # type: ignore[arg-type]
    try:
        await sp.service.denoise(_png(np.full((64, 64, 3), 128, np.uint8)), [op])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        await sp.service.denoise(png, [op])
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        await sp.models.close()
        sp.executor.shutdown()


# ---- (b) speed ------------------------------------------------------------------------------


def gpu_name() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""


def speed(side: int, repeat: int, batch: int) -> None:
    from skimage import data

    rng = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(data.camera()).resize((side, side)), np.float32)
    plane = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.float32)
    png = to_png(plane / 255)
    mp = side * side / 1e6
    gpu = gpu_name() if RUNNER.provider != "cpu" else ""
    print(f"\n## Speed: {side}x{side} grey ({mp:.2f} MP), {RUNNER.provider}, median of {repeat}")
    print(f"   {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{gpu + ', ' if gpu else ''}onnxruntime {ort.__version__}\n")  # fmt: skip
    print(f"| model | provider | tiles | bare, 1 tile/run (MP/s) | bare, batches of {batch} (MP/s) "
          "| service, tiles+batcher (MP/s) | overhead vs 1 tile/run | overhead vs batches "
          "| end to end, PNG in/out (MP/s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for cfg in [m.config for m in scan(MODELS_DIR) if m.config is not None]:
        r = asyncio.run(_speed_of(cfg.name, plane, png, repeat, batch))
        print(f"| {cfg.name} | {r.provider} | {r.tiles} | {mp / r.bare_one:.3f} | "
              f"{mp / r.bare_batched:.3f} | {mp / r.service:.3f} | "
              f"{r.service / r.bare_one - 1:+.1%} | {r.service / r.bare_batched - 1:+.1%} | "
              f"{mp / r.end_to_end:.3f} |")  # fmt: skip
        sys.stdout.flush()


@dataclass
class SpeedResult:
    provider: str
    tiles: int
    bare_one: float  # seconds for the plane
    bare_batched: float
    service: float
    end_to_end: float


async def _speed_of(
    name: str, plane: np.ndarray, png: bytes, repeat: int, batch: int
) -> SpeedResult:
    """Seconds for the plane: bare session (1 tile, then `batch` tiles a run), service plane
    path, service end to end."""
    from services.inference.selection import Choice

    sp = await start_service([name], batch=batch)
    try:
        loaded = sp.models.get(name)
        halo = loaded.config.receptive_radius
        plan = tiling.plan(*plane.shape, 256, halo, 8)
        windows = [(tiling.window(plane, t, halo) / 255).astype(np.float32) for t in plan.tiles()]
        sigma = np.array([20 / 255], np.float32)
        stacks = [np.stack(windows[i : i + batch])[:, None] for i in range(0, len(windows), batch)]
        sigmas = [np.full(len(s), 20 / 255, np.float32) for s in stacks]
        bare_model = OnnxModel(loaded.config, RUNNER)
        choice = Choice(loaded.config, 20.0, 20.0, 1.0)
        bare_model.run(windows[0][None, None], sigma)  # warm-up at the real shapes
        for s, sg in zip(stacks, sigmas, strict=True):
            bare_model.run(s, sg)
        await sp.service._denoise_plane(loaded, plane, choice, None)
        await sp.service.denoise(png, [Denoise(model=name, sigma=20)])
        # Interleaved, so load from elsewhere on the host hits all four alike.
        times: tuple[list[float], ...] = ([], [], [], [])
        for _ in range(repeat):
            t0 = time.perf_counter()
            for w in windows:
                bare_model.run(w[None, None], sigma)
            t1 = time.perf_counter()
            for s, sg in zip(stacks, sigmas, strict=True):
                bare_model.run(s, sg)
            t2 = time.perf_counter()
            await sp.service._denoise_plane(loaded, plane, choice, None)
            t3 = time.perf_counter()
            await sp.service.denoise(png, [Denoise(model=name, sigma=20)])
            t4 = time.perf_counter()
            for bucket, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                bucket.append(value)
        one, batched, service, end = (statistics.median(t) for t in times)
        return SpeedResult(loaded.provider, len(plan), one, batched, service, end)
    finally:
        await sp.models.close()
        sp.executor.shutdown()


# ---- (c) memory -----------------------------------------------------------------------------


def memory(sides: Sequence[int]) -> None:
    """Peak RSS of a fresh process denoising one grey image, per image size."""
    import subprocess

    print("\n## Memory: RSS of a process denoising one grey PNG (dncnn6-n, tile 256)\n")
    print(
        "| image | megapixels | RSS before (MiB) | peak while denoising (MiB) | growth per pixel |"
    )
    print("|---|---|---|---|---|")
    for side in sides:
        code = f"import bench.denoise as b; b._memory_child({side})"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        before, peak = float(out[-2]), float(out[-1])
        per_pixel = (peak - before) * 2**20 / (side * side)
        print(f"| {side}x{side} | {side * side / 1e6:.1f} | {before:.0f} | {peak:.0f} | "
              f"{per_pixel:.1f} B |")  # fmt: skip
        sys.stdout.flush()


def _memory_child(side: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    clean = 128 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    png = to_png(np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255) / 255)
    del clean, yy, xx

    def rss(field: str) -> float:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

    async def run() -> float:
        sp = await start_service(["dncnn6-n"])
        await sp.service.denoise(to_png(np.full((64, 64), 0.5)), [Denoise(sigma=20)])
        # Count the denoise only: reset the peak (VmHWM) once the model and the input exist.
        Path("/proc/self/clear_refs").write_text("5")
        before = rss("VmRSS")
        await sp.service.denoise(png, [Denoise(sigma=20)])
        await sp.models.close()
        sp.executor.shutdown()
        return before

    before = asyncio.run(run())
    print(f"{before:.1f} {rss('VmHWM'):.1f}")


# ---- (f) the best path's colour steps: how they were chosen (tuning crops only) ----------------

# The chroma refinement's settings swept (search radius, patch side, strength h: weight 0.1 h²).
REFINE_SWEEP = ((8, 3, 0.3), (8, 3, 0.5), (8, 3, 0.7), (11, 5, 0.5))
# The luma pair per σ: auto's 17-layer luma model beside dncnn17-n, and the passes.
LUMA_PAIRS = ((15, "dncnn17-l", 1), (25, "dncnn17-m", 8), (50, "dncnn17-m", 1))
PAIR_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def extended_tuning() -> list[tuple[str, np.ndarray, int]]:
    """(name, crop, seed): the ten tuning crops (seeds 7000+), then crops with bright areas,
    which those lack (seeds 9000+): immunohistochemistry's five and the ten brightened."""
    base = list(tuning_crops(256).items())
    extra = [(f"immunohistochemistry ({w})", colour_photo("immunohistochemistry", 256, w))
             for w in TUNING_CROPS]  # fmt: skip
    extra += [(f"{n}, gamma 0.5", np.round(255 * (c / 255.0) ** 0.5).astype(np.uint8))
              for n, c in base]  # fmt: skip
    extra += [(f"{n}, +60", np.clip(c.astype(int) + 60, 0, 255).astype(np.uint8)) for n, c in base]
    return [(n, c, 7000 + i) for i, (n, c) in enumerate(base)] + [
        (n, c, 9000 + i) for i, (n, c) in enumerate(extra)
    ]


def whole_plane(
    models: dict[str, OnnxModel], name: str, plane: np.ndarray, sigma: float, passes: int
) -> np.ndarray:
    """An opponent plane (0..255) through one model as one window (24 pixels of reflection
    around), `passes` orientations averaged, the model given the plane's σ as `selection`
    gives it (a blind one the plane scaled to its training σ); `name` "auto17": the 17-layer
    fp32 model `auto` picks for that σ."""
    op = Denoise(auto=True, sigma=sigma)
    if name == "auto17":
        configs = [m.config for m in models.values()]
        choice = selection.choose(op, sigma, configs, 17, precision="fp32")
    else:
        choice = selection.choose(op, sigma, [], 17, named=models[name].config)
    model = models[choice.config.name]
    scale = np.float32(choice.scale / 255.0)
    total = np.zeros(plane.shape, np.float32)
    for t in range(passes):
        x = np.pad(_orient(plane, t), 24, mode="reflect") * scale
        out = model.run(x[None, None], np.array([choice.model_sigma / 255.0], np.float32))
        total = _accumulate(total, out[0, 0, 24:-24, 24:-24] / scale, t)
    return total / np.float32(passes)


def colour_choices() -> None:
    """The two tables the best path's colour steps were chosen from (BENCHMARKS.md, issue 9,
    run 8): the chroma refinement's sweep on the ten tuning crops, and the luma pair's share
    on the extended tuning crops. Models run per plane, as one window (no tiles, no batcher):
    the 17-layer model auto's σ bands pick (without the chroma σ gains)."""
    models = Sessions().models
    crops = extended_tuning()
    print("\n## The chroma refinement's settings (ten TUNING crops, 17-layer planes x8)\n")
    print("Mean RGB PSNR gain over the unrefined planes (dB), the worst crop in brackets.\n")
    print("| R, patch, h (weight 0.1 h²) | " + " | ".join(f"σ = {s}" for s in SIGMAS) + " |")
    print("|---|" + "---|" * len(SIGMAS))
    gains: dict[tuple[int, int, float], list[str]] = {c: [] for c in REFINE_SWEEP}
    for sigma in SIGMAS:
        found: dict[tuple[int, int, float], list[float]] = {c: [] for c in REFINE_SWEEP}
        for _, clean, seed in crops[:10]:
            noisy = colour_noisy(clean, sigma, seed)
            est = noise.estimate_opponent_sigmas(noisy)
            planes = []
            for k, plane in enumerate(noise.opponent_planes(noisy)):
                s = est[k] * noise.PLANE_SCALE[k]
                planes.append(whole_plane(models, "auto17", plane, s, ENSEMBLE_PASSES))
            before = psnr8(clean, noise.from_opponent(planes))
            for radius, patch, h in REFINE_SWEEP:
                c1, c2 = refine.chroma_rows(
                    planes, noise.rgb_sigma(est), 0, clean.shape[0], radius=radius, patch=patch,
                    weight=0.1 * h * h,
                )  # fmt: skip
                after = psnr8(clean, noise.from_opponent([planes[0], c1, c2]))
                found[(radius, patch, h)].append(after - before)
        for config, values in found.items():
            gains[config].append(f"{np.mean(values):+.3f} ({min(values):+.3f})")
    for (radius, patch, h), cells in gains.items():
        print(f"| {radius}, {patch}, {h} | " + " | ".join(cells) + " |")
    sys.stdout.flush()

    print(f"\n## The luma pair ({len(crops)} TUNING crops: ten, then bright ones)\n")
    print("Mean luma (orthonormal Y) PSNR (dB) by the share of dncnn17-n beside the other model.\n")
    print("| σ, models, passes | " + " | ".join(f"{w:g}" for w in PAIR_SHARES) + " |")
    print("|---|" + "---|" * len(PAIR_SHARES))
    s0 = noise.PLANE_SCALE[0]
    for sigma, partner, passes in LUMA_PAIRS:
        scores: dict[float, list[float]] = {w: [] for w in PAIR_SHARES}
        for _, clean, seed in crops:
            noisy = colour_noisy(clean, sigma, seed)
            s = noise.estimate_opponent_sigmas(noisy)[0] * s0
            y = noise.opponent_planes(noisy)[0]
            truth = noise.opponent_planes(clean)[0]
            a = whole_plane(models, partner, y, s, passes)
            b = whole_plane(models, "dncnn17-n", y, s, passes)
            for w in PAIR_SHARES:
                mse = float(np.mean(((1 - w) * a + w * b - truth) ** 2)) / s0**2
                scores[w].append(10 * np.log10(255.0**2 / mse))
        row = " | ".join(f"{np.mean(v):.3f}" for v in scores.values())
        print(f"| {sigma}, {partner} + dncnn17-n, x{passes} | {row} |")
        sys.stdout.flush()


# ---- (d) tune -------------------------------------------------------------------------------


def tune(crop: int) -> None:
    tuning = {n: photo(n, crop) for n in TUNING}
    sessions = Sessions()
    print(f"\n## Tuning photos only ({', '.join(TUNING)}): mean PSNR (dB) per model")
    print("   blind models as they are / scaled to the true σ; σ-input models given the true σ /"
          " the estimate\n")  # fmt: skip
    sigmas = (5, 15, 25, 35, 50)
    print("| model | " + " | ".join(f"σ={s}" for s in sigmas) + " |")
    print("|---|" + "---|" * len(sigmas))
    for name in sorted(sessions.models, key=lambda n: (len(n), n)):
        variants = (
            [
                ("true σ", sessions.method(name)),
                ("estimated σ", sessions.method(name, False, "est")),
            ]
            if sessions.models[name].config.sigma_input
            else [("as is", sessions.method(name)), ("scaled", sessions.method(name, True))]
        )
        for label, method in variants:
            cells = []
            for sigma in sigmas:
                cells.append(
                    np.mean(
                        [
                            psnr(c, method(noisy_version(c, sigma, 7 + i), sigma))
                            for i, c in enumerate(tuning.values())
                        ]
                    )
                )
            print(f"| {name} {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        choices=(
            "quality",
            "speed",
            "memory",
            "tune",
            "colour",
            "colour-speed",
            "sigma",
            "colour-choices",
        ),
    )
    parser.add_argument("--big", type=int, default=12, help="colour-speed: MP of the big photo")
    parser.add_argument("--quick", action="store_true", help="small crops, no BM3D")
    parser.add_argument("--no-bm3d", action="store_true", help="colour, quality: no BM3D rows")
    parser.add_argument(
        "--paths", nargs="+", default=(), help="colour: only the pixmesh rows whose label "
        "contains one of these"
    )  # fmt: skip
    parser.add_argument(
        "--tuning",
        action="store_true",
        help="sigma, colour: the tuning photos instead of the held-out",
    )
    parser.add_argument("--crop", type=int, default=320, help="quality: crop side (pixels)")
    parser.add_argument("--side", type=int, default=512, help="speed: image side (pixels)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="speed: the service's batch size")
    parser.add_argument(
        "--provider", choices=("cpu", "cuda", "auto"), default="cpu",
        help="onnxruntime execution provider (cuda needs onnxruntime-gpu)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    global RUNNER
    RUNNER = RunnerOptions(args.provider)
    if args.provider == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        parser.error(
            f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}: "
            "--provider cuda needs onnxruntime-gpu (the gpu extra) and the CUDA/cuDNN libraries"
        )
    crop = 128 if args.quick else args.crop
    print(f"# pixmesh denoising bench (python {platform.python_version()}, "
          f"onnxruntime {ort.__version__}, numpy {np.__version__})")  # fmt: skip
    if args.only in (None, "quality"):
        quality(crop, use_bm3d=not (args.quick or args.no_bm3d))
    if args.only in (None, "speed"):
        speed(256 if args.quick else args.side, 1 if args.quick else args.repeat, args.batch)
    if args.only in (None, "memory"):
        memory((512, 1024) if args.quick else (1024, 2048, 3072))
    if args.only in (None, "colour"):
        colour(128 if args.quick else 256, not (args.quick or args.no_bm3d), args.paths,
               args.tuning)  # fmt: skip
    if args.only in (None, "sigma"):
        sigma_estimates(args.tuning)
    if args.only in (None, "colour-speed"):
        colour_speed(256 if args.quick else 1024, 0 if args.quick else args.big)
    if args.only == "tune":
        tune(crop)
    if args.only == "colour-choices":
        colour_choices()


if __name__ == "__main__":
    main()
