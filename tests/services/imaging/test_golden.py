"""Golden tests: every operation on deterministic synthetic inputs, compared with stored results.

Each case stores its output's format, size, mode, per-band means and an 8x8 RGBA thumbnail in
golden/<case>.json. The comparison tolerates codec drift between library versions, not a change
of behaviour: an operation that moves, mirrors, crops or colours differently fails.

Refresh after an intended change, then review the diff:

    PIXMESH_UPDATE_GOLDEN=1 .venv/bin/pytest tests/services/imaging/test_golden.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Convert, Crop, Flip, Resize, Rotate
from services.imaging.limits import Limits
from services.imaging.pipeline import PipelineResult, run

from .samples import decode, encode, exif_rotated_jpeg, ops, scene

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("PIXMESH_UPDATE_GOLDEN") == "1"
LOSSY = {"JPEG", "WEBP", "AVIF", "GIF"}
# Thumbnail values are 8x8 box averages (0..255): lossy codecs move them by a few units.
TOLERANCE = {True: 10, False: 2}


@cache
def png() -> bytes:
    return encode(scene(), "PNG")


@cache
def png_rgba() -> bytes:
    return encode(scene(mode="RGBA"), "PNG")


@cache
def big_jpeg() -> bytes:
    return encode(scene(1280, 960), "JPEG", quality=95)


@cache
def exif_jpeg() -> bytes:
    return exif_rotated_jpeg(scene(240, 320), orientation=6)


CASES: dict[str, tuple[Callable[[], bytes], list[operations_pb2.Operation]]] = {
    "resize_fit_width": (png, ops(Resize(width=160))),
    "resize_fit_box_enlarge": (png, ops(Resize(width=400, height=400, enlarge=True))),
    "resize_fill_square": (png, ops(Resize(width=100, height=100, mode=Resize.FILL))),
    "resize_force": (png, ops(Resize(width=50, height=200, mode=Resize.FORCE))),
    "resize_jpeg_draft": (big_jpeg, ops(Resize(width=160))),
    "crop": (png, ops(Crop(x=200, y=120, width=120, height=120))),
    "rotate_90": (png, ops(Rotate(angle=90))),
    "rotate_30_white": (png, ops(Rotate(angle=30))),
    "rotate_minus_30_translucent": (png, ops(Rotate(angle=-30, background="#33669980"))),
    "flip_horizontal": (png, ops(Flip(axis=Flip.HORIZONTAL))),
    "flip_vertical": (png, ops(Flip(axis=Flip.VERTICAL))),
    "exif_orientation_6": (exif_jpeg, []),
    "convert_webp": (png, ops(Convert(format=image_pb2.WEBP))),
    "convert_avif": (png, ops(Convert(format=image_pb2.AVIF))),
    "convert_gif": (png, ops(Convert(format=image_pb2.GIF))),
    "convert_tiff": (png, ops(Convert(format=image_pb2.TIFF))),
    "convert_jpeg_q40": (png, ops(Convert(format=image_pb2.JPEG, quality=40))),
    "rgba_to_jpeg": (png_rgba, ops(Convert(format=image_pb2.JPEG))),
    "chain": (
        png,
        ops(
            Resize(width=200),
            Rotate(angle=90),
            Crop(x=10, y=10, width=100, height=150),
            Flip(axis=Flip.VERTICAL),
            Convert(format=image_pb2.WEBP),
        ),
    ),
}


def fingerprint(result: PipelineResult) -> dict[str, Any]:
    img = decode(result.data)
    rgba = img.convert("RGBA")
    return {
        "format": image_pb2.ImageFormat.Name(result.format),
        "size": [result.width, result.height],
        "mode": img.mode,
        "mean": [round(m, 1) for m in ImageStat.Stat(rgba).mean],
        "thumb": list(rgba.resize((8, 8), Image.Resampling.BOX).tobytes()),
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    source, operations = CASES[case]
    result = run(source(), operations, limits=Limits())
    got = fingerprint(result)
    assert list(decode(result.data).size) == got["size"]
    path = GOLDEN / f"{case}.json"
    if UPDATE:
        path.write_text(json.dumps(got) + "\n")
    assert path.exists(), f"no golden file for {case}: run with PIXMESH_UPDATE_GOLDEN=1"
    expected = json.loads(path.read_text())
    assert (got["format"], got["size"], got["mode"]) == (
        expected["format"],
        expected["size"],
        expected["mode"],
    )
    tolerance = TOLERANCE[got["format"] in LOSSY]
    worst = max(abs(a - b) for a, b in zip(got["thumb"], expected["thumb"], strict=True))
    assert worst <= tolerance, f"thumbnail differs by up to {worst}"
    for a, b in zip(got["mean"], expected["mean"], strict=True):
        assert abs(a - b) <= tolerance / 2


def test_no_stale_golden_files() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(CASES)
