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
from pixmesh.common.v1.operations_pb2 import (
    Adjust,
    Blur,
    Convert,
    Crop,
    Duotone,
    Extend,
    Flatten,
    Flip,
    Frames,
    Gravity,
    Grayscale,
    Orient,
    Pad,
    Pixelate,
    Redact,
    Region,
    Resize,
    Rotate,
    RoundCorners,
    Sharpen,
    Tint,
    Trim,
    VideoFrames,
    VideoPreview,
    VideoSheet,
    Watermark,
    WatermarkText,
)
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.pipeline import PipelineResult, run
from services.imaging.video import run as video
from services.runtime.video import video_operation

from .samples import (
    SRGB_BLUE,
    SRGB_GREEN,
    SRGB_RED,
    animation,
    decode,
    encode,
    exif_rotated_jpeg,
    icc_profile,
    moving_square,
    ops,
    scene,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("PIXMESH_UPDATE_GOLDEN") == "1"
LOSSY = {"JPEG", "WEBP", "AVIF", "GIF"}
# Thumbnail values are 8x8 box averages (0..255): lossy codecs move them by a few units.
TOLERANCE = {True: 10, False: 2}


@cache
def clip() -> bytes:
    from . import videos

    return videos.clip_bytes(4.0, gop=25)


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


@cache
def bordered_png() -> bytes:
    """The scene on a 30 px white border, for trim."""
    canvas = Image.new("RGB", (380, 300), (255, 255, 255))
    canvas.paste(scene(), (30, 30))
    return encode(canvas, "PNG")


@cache
def swapped_profile_png() -> bytes:
    """The scene tagged with a profile whose red and green primaries are swapped."""
    return encode(scene(), "PNG", icc_profile=icc_profile("swap", SRGB_GREEN, SRGB_RED, SRGB_BLUE))


@cache
def cmyk_jpeg() -> bytes:
    return encode(scene().convert("CMYK"), "JPEG", quality=95)


@cache
def gif() -> bytes:
    return animation(moving_square(4))


@cache
def webp() -> bytes:
    return animation(moving_square(4), "WEBP", lossless=True)


@cache
def logo() -> bytes:
    img = Image.new("RGBA", (60, 30), (0, 0, 0, 0))
    img.paste((255, 255, 0, 255), (0, 0, 30, 30))
    img.paste((0, 0, 0, 160), (30, 0, 60, 30))
    return encode(img, "PNG")


def gravity(anchor: Gravity.Anchor.ValueType, **focus: float) -> Gravity:
    return Gravity(anchor=anchor, **focus)


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
    "orient_ignore": (exif_jpeg, ops(Orient(mode=Orient.IGNORE))),
    "convert_webp": (png, ops(Convert(format=image_pb2.WEBP))),
    "convert_avif": (png, ops(Convert(format=image_pb2.AVIF))),
    "convert_gif": (png, ops(Convert(format=image_pb2.GIF))),
    "convert_tiff": (png, ops(Convert(format=image_pb2.TIFF))),
    "convert_jpeg_q40": (png, ops(Convert(format=image_pb2.JPEG, quality=40))),
    "rgba_to_jpeg": (png_rgba, ops(Convert(format=image_pb2.JPEG))),
    # Geometry
    "resize_fill_down": (png, ops(Resize(width=640, height=640, mode=Resize.FILL_DOWN))),
    "resize_fill_east": (
        png,
        ops(Resize(width=100, height=100, mode=Resize.FILL, gravity=gravity(Gravity.EAST))),
    ),
    "resize_fill_smart": (
        png,
        ops(Resize(width=80, height=120, mode=Resize.FILL, gravity=gravity(Gravity.SMART))),
    ),
    "resize_auto_dpr": (png, ops(Resize(width=60, height=80, mode=Resize.AUTO, dpr=2))),
    "resize_min_height": (png, ops(Resize(width=100, min_height=150))),
    "crop_relative_south_east": (
        png,
        ops(Crop(width_ratio=0.5, height_ratio=0.5, gravity=gravity(Gravity.SOUTH_EAST))),
    ),
    "crop_focus_point": (
        png,
        ops(Crop(width=100, height=80, gravity=gravity(Gravity.FOCUS_POINT, x=0.1, y=0.1))),
    ),
    "trim": (bordered_png, ops(Trim(threshold=8))),
    "pad": (png, ops(Pad(top=10, right=20, bottom=30, left=40, background="#336699"))),
    "extend_aspect_north": (
        png_rgba,
        ops(Extend(aspect_ratio=1.0, gravity=gravity(Gravity.NORTH))),
    ),
    # Adjustments
    "blur": (png, ops(Blur(sigma=4))),
    "sharpen": (png, ops(Blur(sigma=2), Sharpen(sigma=2, amount=3))),
    "pixelate": (png, ops(Pixelate(size=20))),
    "adjust": (png, ops(Adjust(brightness=10, contrast=30, saturation=-50))),
    "grayscale": (png_rgba, ops(Grayscale())),
    "duotone_sepia": (png, ops(Duotone())),
    "duotone_colours": (png, ops(Duotone(shadow="#1b0b4f", highlight="#f8e16c"))),
    "tint_half_alpha": (png_rgba, ops(Tint(color="#ff8000", strength=0.5))),
    "flatten": (png_rgba, ops(Flatten(background="#ff00ff"))),
    "round_corners": (png, ops(RoundCorners(radius=60))),
    # Overlays
    "watermark": (
        png,
        ops(Watermark(image=logo(), position=gravity(Gravity.SOUTH_EAST), margin=10, opacity=0.8)),
    ),
    "watermark_tiled_scaled": (png, ops(Watermark(image=logo(), tile=True, scale=0.15, margin=12))),
    "watermark_text": (
        png,
        ops(
            WatermarkText(
                text="pixmesh",
                size=48,
                color="#ffffff",
                outline_color="#000000",
                margin=8,
                position=gravity(Gravity.SOUTH_WEST),
            )
        ),
    ),
    "redact_blur": (png, ops(Redact(regions=[Region(x=200, y=120, width=120, height=100)]))),
    "redact_pixelate": (
        png,
        ops(
            Redact(
                regions=[
                    Region(x=0, y=0, width=100, height=80),
                    Region(x=240, y=150, width=80, height=60),
                ],
                method=Redact.PIXELATE,
                strength=12,
            )
        ),
    ),
    # Encoding and colour
    "convert_jpeg_progressive": (png, ops(Convert(format=image_pb2.JPEG, progressive=True))),
    "convert_webp_lossless": (png_rgba, ops(Convert(format=image_pb2.WEBP, lossless=True))),
    "convert_png_palette": (png, ops(Convert(format=image_pb2.PNG, colors=16))),
    "convert_avif_speed": (png, ops(Convert(format=image_pb2.AVIF, speed=4, quality=70))),
    "convert_jpeg_max_bytes": (png, ops(Convert(format=image_pb2.JPEG, max_bytes=6000))),
    "icc_to_srgb": (swapped_profile_png, []),
    "cmyk_jpeg": (cmyk_jpeg, []),
    # Animations
    "animated_gif": (gif, ops(Resize(width=32), Rotate(angle=90), Blur(sigma=0.5))),
    "animated_webp_to_gif": (
        webp,
        ops(Crop(x=8, y=8, width=48, height=32), Convert(format=image_pb2.GIF)),
    ),
    "animated_frame_still": (gif, ops(Frames(start=2, count=1), Convert(format=image_pb2.PNG))),
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
    # Videos: the first output
    "video_frames_best_near": (
        clip,
        ops(VideoFrames(fractions=[0.5], select=VideoFrames.BEST_NEAR), Resize(width=80)),
    ),
    "video_sheet": (clip, ops(VideoSheet(count=4, tile_width=64, gap=2, background="#204060"))),
    "video_preview": (clip, ops(VideoPreview(start_s=1, duration_s=1, width=64, fps=5))),
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
        "frames": result.frames,
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    source, operations = CASES[case]
    if video_operation(operations):
        result = video.run(source(), operations, limits=Limits()).renditions[0][1]
    else:
        result = run(source(), operations, limits=Limits()).image
    got = fingerprint(result)
    assert list(decode(result.data).size) == got["size"]
    path = GOLDEN / f"{case}.json"
    if UPDATE:
        path.write_text(json.dumps(got) + "\n")
    assert path.exists(), f"no golden file for {case}: run with PIXMESH_UPDATE_GOLDEN=1"
    expected = json.loads(path.read_text())
    assert (got["format"], got["size"], got["mode"], got["frames"]) == (
        expected["format"],
        expected["size"],
        expected["mode"],
        expected["frames"],
    )
    tolerance = TOLERANCE[got["format"] in LOSSY]
    worst = max(abs(a - b) for a, b in zip(got["thumb"], expected["thumb"], strict=True))
    assert worst <= tolerance, f"thumbnail differs by up to {worst}"
    for a, b in zip(got["mean"], expected["mean"], strict=True):
        assert abs(a - b) <= tolerance / 2


def test_no_stale_golden_files() -> None:
    assert {p.stem for p in GOLDEN.glob("*.json")} == set(CASES)


def test_every_operation_has_a_golden_case() -> None:
    used = {op.WhichOneof("op") for _, operations in CASES.values() for op in operations}
    assert set(REGISTRY) <= used, sorted(set(REGISTRY) - used)
