"""Where the metadata service's indexing CPU goes, step by step: it prints figures, it does not
pass or fail. Results: BENCHMARKS.md ("Metadata indexing CPU by step, ninth pass").

    .venv/bin/python -m bench.metadata_steps --folder /tmp/lead/photos300 --rounds 3

For every file of the folder, in process (time.process_time), the steps of `pixels.summarize` as
it runs them (open and draft, decode, upright, the 256 px thumbnail, colours, placeholders, pHash,
dHash) and the sha256 of the bytes; mean ms per file, by suffix. For PNGs also the floor of any
decoder of the same pixels: zlib's inflate of the IDAT stream alone, and OpenCV's decoder (libpng)
when it is installed. A file is summarised once per round; the decoders alternate in each round.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import os
import statistics
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from services.metadata import extract, hashes, pixels


def _steps(data: bytes, cpu: dict[str, list[float]]) -> None:
    marks: list[tuple[str, float]] = [("", time.process_time())]

    def mark(name: str) -> None:
        marks.append((name, time.process_time()))

    hashlib.sha256(data).hexdigest()
    mark("sha256")
    with Image.open(io.BytesIO(data), formats=extract._OPEN) as image:
        image.draft("RGB", (pixels.WORKING_SIZE, pixels.WORKING_SIZE))
        mark("open")
        image.load()
        mark("decode")
        ImageOps.exif_transpose(image, in_place=True)
        upright = pixels._to_8bit(image)
        mark("upright")
        upright.thumbnail((pixels.WORKING_SIZE, pixels.WORKING_SIZE), Image.Resampling.LANCZOS)
        rgba = upright.convert("RGBA") if upright.has_transparency_data else None
        rgb = upright.convert("RGB") if rgba is None else pixels._on_white(rgba)
        mark("thumbnail")
    pixels.colors(rgb)
    mark("colours")
    pixels._placeholders(rgb, rgba)
    mark("placeholders")
    hashes.phash(rgb)
    mark("phash")
    hashes.dhash(rgb)
    mark("dhash")
    for (_, start), (name, end) in itertools.pairwise(marks):
        cpu.setdefault(name, []).append(end - start)


def _idat(data: bytes) -> bytes:
    pos, parts = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            parts.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return b"".join(parts)


def _png_decoders() -> dict[str, Callable[[bytes], object]]:
    def pillow(data: bytes) -> object:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size

    decoders: dict[str, Callable[[bytes], object]] = {
        "Pillow load": pillow,
        "zlib inflate of IDAT": lambda data: zlib.decompress(_idat(data)),
    }
    try:
        import cv2
    except ImportError:
        return decoders
    cv2.setNumThreads(1)
    decoders["OpenCV imdecode"] = lambda data: cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED
    )
    return decoders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metadata_steps", description=__doc__)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    files = sorted(p for p in args.folder.rglob("*") if p.is_file())
    data = [(p.suffix.lstrip(".").lower(), p.read_bytes()) for p in files]
    extract.extract(data[0][1])  # imports and plugin registration out of the timing
    loadavg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{len(data)} files, {args.rounds} rounds, load average {loadavg}")
    steps: dict[str, dict[str, list[float]]] = {}
    decoders = _png_decoders()
    decode_cpu: dict[str, list[float]] = {name: [] for name in decoders}
    for round_ in range(args.rounds):
        for kind, blob in data:
            _steps(blob, steps.setdefault(kind, {}))
        order = list(decoders) if round_ % 2 == 0 else list(decoders)[::-1]
        for name in order:
            for kind, blob in data:
                if kind == "png":
                    start = time.process_time()
                    decoders[name](blob)
                    decode_cpu[name].append(time.process_time() - start)
    loadavg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average after: {loadavg}")
    for kind, cpu in sorted(steps.items()):
        total = sum(statistics.fmean(v) for v in cpu.values())
        parts = ", ".join(f"{name} {1000 * statistics.fmean(v):.2f}" for name, v in cpu.items())
        print(f"{kind} ({len(cpu['decode']) // args.rounds}): {1000 * total:.1f} ms = {parts}")
    for name, values in decode_cpu.items():
        if values:
            print(f"png decode, {name}: {1000 * statistics.fmean(values):.1f} ms")


if __name__ == "__main__":
    main()
