"""σ gains and model depth per opponent plane kind, on the colour TUNING photos only (issue 9).

    .venv/bin/python -m bench.colour_gains                                  # the best path's sweep
    .venv/bin/python -m bench.colour_gains --sigmas 10 15 --gains 1.0 1.1 1.2 1.3 --families 17 --seeds 2
    .venv/bin/python -m bench.colour_gains --passes 8 --sigmas 15 --gains 1.0 1.2 --families 17

The photos of bench/denoise.py's COLOUR_TUNING set (whole, never the held-out ones) get
Gaussian noise independent in R, G and B, rounded and clipped to 8 bits (`colour_noisy`), and
go through the service's own steps: `_prepare` (AUTO -> the opponent planes and their σ
estimates, full-resolution chroma as on a GPU), `_denoise_plane` (tiles, batcher, `--passes`
orientations) and `_finish` (back to RGB, 8 bits). For each plane and each (depth, gain) the
model `auto` picks at that depth (fp32) is run with its σ multiplied by the gain (a σ-input
model) or the image's scale divided by it (a blind one), on top of the plane's own σ: the
configs' `plane_sigma_gains` are not applied here, so gain 1 is the model given the plane's
estimated σ. The outputs are cached in
`--cache` (per --passes) and recombined for every setting of (luma depth/gain, chroma
depth/gain). Prints mean PSNR over photos and seeds per σ, and Δ against depth
`--families[0]` at gain 1. The figures of BENCHMARKS.md's issue 9, run 5 came from it.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import itertools
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.denoise import COLOUR_TUNING, _png, colour_noisy, colour_photo, psnr8, start_service
from pixmesh.common.v1 import operations_pb2
from services.inference import imageio, selection
from services.inference import service as svc

WHOLE = 100_000  # a crop side larger than any photo: the whole photo


async def sweep(args: argparse.Namespace) -> dict[tuple[str, float, str, float], dict[int, float]]:
    path = Path(f"{args.cache}-x{args.passes}.pkl")
    cache: dict[tuple[Any, ...], np.ndarray] = (
        pickle.loads(path.read_bytes()) if path.exists() else {}
    )
    sp = await start_service(precision="fp32", chroma_scale=1, depth=17, ensemble=args.passes)
    s = sp.service
    loaded = [m.config for m in s.models.ready()]
    images = []
    started = time.monotonic()
    try:
        for sigma in args.sigmas:
            for k, name in enumerate(COLOUR_TUNING):
                clean = colour_photo(name, WHOLE)
                for seed in range(args.seeds):
                    noisy = colour_noisy(clean, sigma, 5000 + 10 * seed + k)
                    decoded = imageio.decode(_png(noisy), s.limits)
                    planes = svc._prepare(decoded, operations_pb2.Denoise.AUTO, 1)
                    assert planes.mode == operations_pb2.Denoise.OPPONENT
                    outs = {}
                    for plane, family, gain in itertools.product(
                        planes.planes, args.families, args.gains
                    ):
                        key = (name, sigma, seed, plane.name, family, gain)
                        if key not in cache:
                            depth = int(family)
                            choice = selection.choose(
                                operations_pb2.Denoise(auto=True), plane.model_sigma,
                                [c for c in loaded if c.depth == depth], depth, None, "fp32",
                            )  # fmt: skip
                            if choice.config.sigma_input:
                                given = min(choice.model_sigma * gain, selection.SIGMA_INPUT_MAX)
                                choice = dataclasses.replace(choice, model_sigma=given)
                            else:
                                choice = dataclasses.replace(choice, scale=choice.scale / gain)
                            model = s.models.get(choice.config.name)
                            cache[key] = await s._denoise_plane(
                                model, plane.data.copy(), choice, None, args.passes
                            )
                            path.write_bytes(pickle.dumps(cache))
                            print(f"{time.monotonic() - started:6.0f} s  {key}  {choice.config.name}",
                                  flush=True)  # fmt: skip
                        outs[(plane.name, family, gain)] = cache[key]
                    images.append((sigma, decoded, planes, outs, clean))
    finally:
        await sp.models.close()
        sp.executor.shutdown()
    table = {}
    for fy, gy, fc, gc in itertools.product(args.families, args.gains, args.families, args.gains):
        per_sigma: dict[int, list[float]] = {}
        for sigma, decoded, planes, outs, clean in images:
            these = copy.deepcopy(planes)
            for p in these.planes:
                family, gain = (fy, gy) if p.name == "Y" else (fc, gc)
                p.data = outs[(p.name, family, gain)].copy()
            result, _ = svc._finish(decoded, these)
            per_sigma.setdefault(sigma, []).append(psnr8(clean, result.pixels))
        table[(fy, gy, fc, gc)] = {s: float(np.mean(v)) for s, v in per_sigma.items()}
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50])
    parser.add_argument("--gains", type=float, nargs="+", default=[0.9, 0.95, 1.0, 1.05, 1.1])
    parser.add_argument("--families", nargs="+", default=["17", "6"], help="model depths")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--passes", type=int, default=1, help="self-ensemble orientations")
    parser.add_argument("--cache", default="/tmp/pixmesh-colour-gains", help="cache file prefix")
    args = parser.parse_args(argv)
    if 1.0 not in args.gains:
        parser.error("--gains must include 1.0 (the baseline)")
    table = asyncio.run(sweep(args))
    base = table[(args.families[0], 1.0, args.families[0], 1.0)]
    rows = sorted(table.items(), key=lambda r: -r[1][args.sigmas[len(args.sigmas) // 2]])
    print(f"\npasses {args.passes}, seeds {args.seeds}, photos {', '.join(COLOUR_TUNING)} (whole);"
          " mean PSNR (dB), Δ against the first depth at gain 1\n")  # fmt: skip
    print(
        "| Y depth / gain | C depth / gain | " + " | ".join(f"σ = {s}" for s in args.sigmas) + " |"
    )
    print("|---|---|" + "---|" * len(args.sigmas))
    for (fy, gy, fc, gc), per in rows:
        cells = " | ".join(f"{per[s]:.3f} ({per[s] - base[s]:+.3f})" for s in args.sigmas)
        print(f"| {fy} / {gy} | {fc} / {gc} | {cells} |")


if __name__ == "__main__":
    main()
