"""Content addressing of outputs: what an output key stands for, and the engine that made it.

An output key is `outputs/<work digest>.<ext>`, the digest a sha256 of everything its bytes
depend on besides code that changes only with a new KEY_SCHEME:

- the stage's input key (itself content-addressed: `inputs/<sha256>` or an earlier output key);
- the stage's operations as sent (deterministic protobuf), and for a rendition all the stage's
  renditions and its name;
- the engine: the versions of the libraries that decode and encode (Pillow, libjpeg-turbo,
  libwebp, libavif, libheif, zlib, libtiff, Little CMS, FreeType, onnxruntime) and every default
  the worker fills in (WebP effort, qualities, AVIF speed, PNG level, default format), so that a
  changed setting or an upgraded library gives a new key, never stale bytes under an old one;
- what the stage decided while it ran (`decided`: the model and execution provider a Denoise
  picked), when the worker cannot know it before.

Equal digests mean equal work, so a stage whose output keys exist is skipped (worker.py). Bump
KEY_SCHEME when a code change alters the bytes that the same inputs give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cache
from importlib import metadata as importlib_metadata

from opentelemetry import trace
from PIL import __version__ as pillow_version
from PIL import features

KEY_SCHEME = "2"

# Pillow's name of each library -> the name in the fingerprint.
_PILLOW_LIBS = {
    "libjpeg_turbo": "libjpeg-turbo",
    "webp": "libwebp",
    "avif": "libavif",
    "zlib": "zlib",
    "zlib_ng": "zlib-ng",
    "libtiff": "libtiff",
    "littlecms2": "littlecms2",
    "freetype2": "freetype2",
    "raqm": "raqm",
    "jpg_2000": "openjpeg",
}
# Packages whose version changes bytes where they are used (importlib.metadata: no import).
_PACKAGES = ("pillow-heif", "onnxruntime", "onnxruntime-gpu")


@cache
def engine_fingerprint() -> Mapping[str, str]:
    """Versions of the libraries that make this process's output bytes (absent ones left out)."""
    engine = {"pillow": pillow_version}
    for feature, name in _PILLOW_LIBS.items():
        try:
            version = features.version(feature)
        except ValueError:  # not a feature this Pillow knows
            version = None
        if version:
            engine[name] = version
    for package in _PACKAGES:
        try:
            engine[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    if "pillow-heif" in engine:
        try:
            import pillow_heif

            engine["libheif"] = str(pillow_heif.libheif_version())
        except ImportError:
            pass
    return engine


def work_digest(
    input_key: str,
    spec: bytes,
    engine: Mapping[str, str],
    decided: Mapping[str, str] | None = None,
) -> str:
    """The hex digest that names the output of `spec` run on `input_key` by `engine`."""
    h = hashlib.sha256(f"pixmesh-output/{KEY_SCHEME}\0{input_key}\0".encode())
    h.update(len(spec).to_bytes(8, "big") + spec)
    for table in (engine, decided or {}):
        h.update(b"\1")
        for name in sorted(table):
            h.update(f"{name}={table[name]}\0".encode())
    return h.hexdigest()


def output_key(digest: str, ext: str) -> str:
    return f"outputs/{digest}.{ext}"


def current_trace_id() -> str:
    """The current span's trace id in hex ("" when not tracing)."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""
