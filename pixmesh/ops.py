"""Builders for pipeline operations and renditions, and the `NAME=ARGS` syntax the CLI accepts.

    >>> from pixmesh import ops
    >>> pipeline = [ops.resize(800, 600, mode="fill"), ops.convert("webp", quality=80)]
    >>> ops.parse("resize=800x600,fill") == pipeline[0]
    True
    >>> ops.parse_rendition("thumb=resize=200x200,fill;convert=webp") == ops.rendition(
    ...     "thumb", [ops.resize(200, 200, "fill"), ops.convert("webp")]
    ... )
    True

Builders check what can be checked without knowing the deployment (ranges, names); the gateway
still validates everything against its limits and the image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Operation, Rendition

__all__ = [
    "Operation",
    "OperationLike",
    "Rendition",
    "RenditionsLike",
    "adjust",
    "blur",
    "coerce",
    "coerce_renditions",
    "convert",
    "crop",
    "denoise",
    "describe",
    "duotone",
    "extend",
    "extract_metadata",
    "flatten",
    "flip",
    "frames",
    "grayscale",
    "orient",
    "pad",
    "parse",
    "parse_rendition",
    "pixelate",
    "redact",
    "rendition",
    "resize",
    "rotate",
    "round_corners",
    "sharpen",
    "trim",
    "watermark",
    "watermark_text",
]

# Either a built Operation or its `NAME=ARGS` spelling.
OperationLike = Operation | str
# Rendition messages, or a mapping of rendition name -> its operations (in insertion order).
RenditionsLike = Iterable[Rendition] | Mapping[str, Iterable[OperationLike] | OperationLike]

_RESIZE_MODES = {
    "fit": operations_pb2.Resize.FIT,
    "fill": operations_pb2.Resize.FILL,
    "force": operations_pb2.Resize.FORCE,
    "fill_down": operations_pb2.Resize.FILL_DOWN,
    "auto": operations_pb2.Resize.AUTO,
}
_ANCHORS = {
    name.lower(): value
    for name, value in operations_pb2.Gravity.Anchor.items()
    if value not in (operations_pb2.Gravity.ANCHOR_UNSPECIFIED, operations_pb2.Gravity.FOCUS_POINT)
}
_COMPASS = {name: value for name, value in _ANCHORS.items() if name != "smart"}
_REDACT_METHODS = {"blur": operations_pb2.Redact.BLUR, "pixelate": operations_pb2.Redact.PIXELATE}
_RENDITION_NAME = re.compile(r"[a-z0-9_-]{1,64}")
# Limits the contract states (imaging checks them again).
_WATERMARK_MAX_BYTES = 256 * 1024
_TEXT_MAX_CHARS = 256
_MAX_REGIONS = 64
# Gravity for crop/fill: a compass point, "smart", or a focus point (x, y) in 0..1.
GravityLike = str | tuple[float, float]
_FLIP_AXES = {
    "horizontal": operations_pb2.Flip.HORIZONTAL,
    "vertical": operations_pb2.Flip.VERTICAL,
}
_ORIENT_MODES = {"auto": operations_pb2.Orient.AUTO, "ignore": operations_pb2.Orient.IGNORE}
# Common spellings of output formats, mapped to the enum.
_FORMATS = {
    "jpeg": image_pb2.JPEG,
    "jpg": image_pb2.JPEG,
    "png": image_pb2.PNG,
    "webp": image_pb2.WEBP,
    "avif": image_pb2.AVIF,
    "gif": image_pb2.GIF,
    "tiff": image_pb2.TIFF,
    "tif": image_pb2.TIFF,
    "bmp": image_pb2.BMP,
    "ico": image_pb2.ICO,
    "heif": image_pb2.HEIF,
    "heic": image_pb2.HEIF,
}


def resize(
    width: int = 0,
    height: int = 0,
    mode: str = "fit",
    *,
    enlarge: bool = False,
    gravity: GravityLike = "",
    dpr: float = 0.0,
) -> Operation:
    """Scale to a box; 0 for one side derives it from the aspect ratio (fit only).

    mode: fit, fill, force, fill_down or auto (see Resize.Mode). gravity: which part fill,
    fill_down and auto keep: a compass point ("north_east"), "smart", or a focus point (x, y)
    in 0..1. dpr: device pixel ratio, the sizes are multiplied by it (0 means 1)."""
    _check_range("resize width", width, 0, None)
    _check_range("resize height", height, 0, None)
    if width == 0 and height == 0:
        raise ValueError("resize needs a width, a height or both")
    try:
        mode_value = _RESIZE_MODES[mode.lower()]
    except KeyError:
        raise ValueError(
            f"resize mode must be one of {_names(_RESIZE_MODES)}, not {mode!r}"
        ) from None
    if mode_value != operations_pb2.Resize.FIT and (width == 0 or height == 0):
        raise ValueError(f"resize mode {mode.lower()!r} needs both width and height")
    if dpr and not 0 < dpr <= 10:
        raise ValueError(f"resize dpr must be within 0..10 (0 means 1), not {dpr:g}")
    msg = operations_pb2.Resize(width=width, height=height, mode=mode_value, enlarge=enlarge)
    if gravity:
        msg.gravity.CopyFrom(_gravity("resize gravity", gravity, _ANCHORS, focus=True))
    msg.dpr = dpr
    return Operation(resize=msg)


def crop(x: int, y: int, width: int, height: int) -> Operation:
    """Cut out a rectangle; x, y is its top-left corner."""
    _check_range("crop x", x, 0, None)
    _check_range("crop y", y, 0, None)
    _check_range("crop width", width, 1, None)
    _check_range("crop height", height, 1, None)
    return Operation(crop=operations_pb2.Crop(x=x, y=y, width=width, height=height))


def rotate(angle: float, background: str = "") -> Operation:
    """Rotate clockwise by `angle` degrees (-360..360); `background` is "#rrggbb[aa]"."""
    if not -360 <= angle <= 360:
        raise ValueError(f"rotate angle must be within -360..360, not {angle:g}")
    if background and not _is_hex_colour(background):
        raise ValueError(f"rotate background must be #rrggbb or #rrggbbaa, not {background!r}")
    return Operation(rotate=operations_pb2.Rotate(angle=angle, background=background))


def flip(axis: str = "horizontal") -> Operation:
    """Mirror left-right ("horizontal") or top-bottom ("vertical")."""
    try:
        value = _FLIP_AXES[axis.lower()]
    except KeyError:
        raise ValueError(f"flip axis must be one of {_names(_FLIP_AXES)}, not {axis!r}") from None
    return Operation(flip=operations_pb2.Flip(axis=value))


def orient(mode: str = "auto") -> Operation:
    """Whether the EXIF orientation is applied: "auto" (what happens anyway) turns the pixels
    upright, "ignore" keeps them as stored. Only as the job's first operation (before a
    preset's), never in a rendition."""
    try:
        value = _ORIENT_MODES[mode.lower()]
    except KeyError:
        raise ValueError(
            f"orient mode must be one of {_names(_ORIENT_MODES)}, not {mode!r}"
        ) from None
    return Operation(orient=operations_pb2.Orient(mode=value))


def convert(format: str, quality: int = 0, *, effort: int | None = None) -> Operation:
    """Encode to `format` ("webp", "jpeg", ...); quality 1..100, 0 for the format's default.
    "auto" lets the gateway pick AVIF, WebP or the input's format from the Accept header.

    `effort` (WebP only) is libwebp's encoder effort, 0 (fastest, largest) .. 6 (slowest,
    smallest); None leaves it to the service (4 unless PIXMESH_WEBP_EFFORT says otherwise).
    Measured on 800x600 photos at q80, 2 encodes in under half of 4's time for ~4% more bytes,
    0 in a quarter for ~27% more (BENCHMARKS.md, "Imaging")."""
    _check_range("convert quality", quality, 0, 100)
    if effort is not None:
        _check_range("convert effort", effort, 0, 6)
        if format.lower() != "webp":
            raise ValueError(f"convert effort applies to webp only, not {format!r}")
    if format.lower() == "auto":
        return Operation(convert=operations_pb2.Convert(auto=True, quality=quality))
    try:
        value = _FORMATS[format.lower()]
    except KeyError:
        raise ValueError(
            f"convert format must be one of {_names(_FORMATS)}, not {format!r}"
        ) from None
    _check_range("convert quality", quality, 0, 100)
    return Operation(convert=operations_pb2.Convert(format=value, quality=quality, effort=effort))


def extract_metadata() -> Operation:
    """Read dimensions, format and EXIF; the result comes back in `Job.metadata`."""
    return Operation(extract_metadata=operations_pb2.ExtractMetadata())


def denoise(*, auto: bool = False, sigma: float = 0.0, model: str = "") -> Operation:
    """DnCNN denoising. `auto` estimates the noise level; `sigma` (0..255 scale) fixes it."""
    if sigma < 0 or sigma > 255:
        raise ValueError(f"denoise sigma must be within 0..255, not {sigma:g}")
    if auto and sigma:
        raise ValueError("denoise takes either auto or a sigma, not both")
    return Operation(denoise=operations_pb2.Denoise(model=model, sigma=sigma, auto=auto))


def blur(sigma: float) -> Operation:
    """Gaussian blur; `sigma` is the standard deviation in pixels, 0.1..100."""
    _check_float("blur sigma", sigma, 0.1, 100)
    return Operation(blur=operations_pb2.Blur(sigma=sigma))


def sharpen(sigma: float = 0.0, amount: float = 0.0, threshold: int = 0) -> Operation:
    """Unsharp mask. sigma 0.1..10 (0 means 1), amount 0..10 (0 means 1), threshold 0..255."""
    if sigma:
        _check_float("sharpen sigma", sigma, 0.1, 10)
    _check_float("sharpen amount", amount, 0, 10)
    _check_range("sharpen threshold", threshold, 0, 255)
    return Operation(
        sharpen=operations_pb2.Sharpen(sigma=sigma, amount=amount, threshold=threshold)
    )


def pixelate(size: int) -> Operation:
    """Replace the image by blocks of `size` x `size` pixels (2..1024) of one colour."""
    _check_range("pixelate size", size, 2, 1024)
    return Operation(pixelate=operations_pb2.Pixelate(size=size))


def adjust(*, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> Operation:
    """Each from -100 (black, flat grey, grey) through 0 (unchanged) to 100 (twice)."""
    for name, value in (
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        _check_float(f"adjust {name}", value, -100, 100)
    if not (brightness or contrast or saturation):
        raise ValueError("adjust needs a brightness, a contrast or a saturation")
    msg = operations_pb2.Adjust(brightness=brightness, contrast=contrast, saturation=saturation)
    return Operation(adjust=msg)


def grayscale() -> Operation:
    """Shades of grey (alpha is kept)."""
    return Operation(grayscale=operations_pb2.Grayscale())


def duotone(shadow: str = "", highlight: str = "") -> Operation:
    """Map brightness to a gradient from `shadow` to `highlight` ("#rrggbb"); none: sepia."""
    _check_colour("duotone shadow", shadow, alpha=False)
    _check_colour("duotone highlight", highlight, alpha=False)
    return Operation(duotone=operations_pb2.Duotone(shadow=shadow, highlight=highlight))


def flatten(background: str = "") -> Operation:
    """Lay the image over an opaque `background` ("#rrggbb", default white)."""
    _check_colour("flatten background", background, alpha=False)
    return Operation(flatten=operations_pb2.Flatten(background=background))


def round_corners(radius: int, background: str = "") -> Operation:
    """Round the corners with `radius` pixels; they become transparent or `background`."""
    _check_range("round_corners radius", radius, 1, None)
    _check_colour("round_corners background", background)
    return Operation(
        round_corners=operations_pb2.RoundCorners(radius=radius, background=background)
    )


def trim(
    threshold: int = 0,
    color: str = "",
    *,
    equal_horizontal: bool = False,
    equal_vertical: bool = False,
) -> Operation:
    """Cut away borders of one colour (default the top-left pixel's); `threshold` 0..255 is
    the largest per-channel difference still counted as border."""
    _check_range("trim threshold", threshold, 0, 255)
    _check_colour("trim color", color)
    msg = operations_pb2.Trim(
        threshold=threshold,
        color=color,
        equal_horizontal=equal_horizontal,
        equal_vertical=equal_vertical,
    )
    return Operation(trim=msg)


def pad(
    top: int,
    right: int | None = None,
    bottom: int | None = None,
    left: int | None = None,
    *,
    background: str = "",
) -> Operation:
    """Add a border, sides given as in CSS: pad(10), pad(10, 20) (vertical, horizontal),
    pad(10, 20, 30) (top, horizontal, bottom) or pad(10, 20, 30, 40) (top, right, bottom, left)."""
    right = top if right is None else right
    bottom = top if bottom is None else bottom
    left = right if left is None else left
    sides = {"top": top, "right": right, "bottom": bottom, "left": left}
    for name, value in sides.items():
        _check_range(f"pad {name}", value, 0, None)
    if not any(sides.values()):
        raise ValueError("pad needs at least one side wider than 0")
    _check_colour("pad background", background)
    return Operation(pad=operations_pb2.Pad(**sides, background=background))


def extend(
    width: int = 0,
    height: int = 0,
    *,
    aspect_ratio: float = 0.0,
    gravity: str = "",
    background: str = "",
) -> Operation:
    """Grow the canvas to width x height and/or to a width/height `aspect_ratio` (0.01..100)
    without scaling the image; `gravity` (a compass point) places the image on it."""
    _check_range("extend width", width, 0, None)
    _check_range("extend height", height, 0, None)
    if aspect_ratio:
        _check_float("extend aspect_ratio", aspect_ratio, 0.01, 100)
    if not (width or height or aspect_ratio):
        raise ValueError("extend needs a width, a height or an aspect_ratio")
    _check_colour("extend background", background)
    msg = operations_pb2.Extend(
        width=width, height=height, aspect_ratio=aspect_ratio, background=background
    )
    if gravity:
        msg.gravity.CopyFrom(_gravity("extend gravity", gravity, _COMPASS))
    return Operation(extend=msg)


def frames(start: int = 0, count: int = 0) -> Operation:
    """Keep `count` frames of an animation from `start` (0-based); count 0 keeps the rest."""
    _check_range("frames start", start, 0, None)
    _check_range("frames count", count, 0, None)
    return Operation(frames=operations_pb2.Frames(start=start, count=count))


def watermark(
    image: bytes | str | os.PathLike[str],
    *,
    position: str = "",
    margin: int = 0,
    scale: float = 0.0,
    opacity: float | None = None,
    tile: bool = False,
) -> Operation:
    """Draw an image (encoded bytes or a file path; at most 256 KiB) over this one, at a compass
    `position` (default centre) or tiled; `scale` is its width as a fraction of the image's
    (0 keeps its own size), `opacity` 0..1."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    if not data:
        raise ValueError("watermark needs an image")
    if len(data) > _WATERMARK_MAX_BYTES:
        raise ValueError(f"watermark image must be at most {_WATERMARK_MAX_BYTES} bytes")
    _check_range("watermark margin", margin, 0, None)
    _check_float("watermark scale", scale, 0, 1)
    msg = operations_pb2.Watermark(image=data, margin=margin, scale=scale, tile=tile)
    _place(msg, "watermark", position, tile, opacity)
    return Operation(watermark=msg)


def watermark_text(
    text: str,
    *,
    position: str = "",
    margin: int = 0,
    size: int = 0,
    color: str = "",
    outline_color: str = "",
    opacity: float | None = None,
    tile: bool = False,
) -> Operation:
    """Draw `text` (1..256 characters) at a compass `position` (default centre) or tiled; size
    in pixels 6..1024 (0 picks one from the image), colours "#rrggbb[aa]", opacity 0..1."""
    if not text.strip() or len(text) > _TEXT_MAX_CHARS:
        raise ValueError(f"watermark_text needs 1..{_TEXT_MAX_CHARS} characters, not only spaces")
    _check_range("watermark_text margin", margin, 0, None)
    if size:
        _check_range("watermark_text size", size, 6, 1024)
    _check_colour("watermark_text color", color)
    _check_colour("watermark_text outline_color", outline_color)
    msg = operations_pb2.WatermarkText(
        text=text, margin=margin, size=size, color=color, outline_color=outline_color, tile=tile
    )
    _place(msg, "watermark_text", position, tile, opacity)
    return Operation(watermark_text=msg)


def redact(
    regions: Iterable[tuple[int, int, int, int]], method: str = "blur", strength: int = 0
) -> Operation:
    """Blur or pixelate rectangles (x, y, width, height), 1..64 of them; strength is the blur
    sigma or block size, 1..256 (0 means 16)."""
    boxes = list(regions)
    if not 1 <= len(boxes) <= _MAX_REGIONS:
        raise ValueError(f"redact needs 1..{_MAX_REGIONS} regions, not {len(boxes)}")
    msg = operations_pb2.Redact()
    msg.method = _choice("redact method", method, _REDACT_METHODS)  # type: ignore[assignment]
    for i, box in enumerate(boxes):
        if len(box) != 4:
            raise ValueError(f"redact region {i} must be (x, y, width, height)")
        x, y, width, height = box
        _check_range(f"redact region {i} x", x, 0, None)
        _check_range(f"redact region {i} y", y, 0, None)
        _check_range(f"redact region {i} width", width, 1, None)
        _check_range(f"redact region {i} height", height, 1, None)
        msg.regions.add(x=x, y=y, width=width, height=height)
    _check_range("redact strength", strength, 0, 256)
    msg.strength = strength
    return Operation(redact=msg)


# --- renditions ----------------------------------------------------------------------------


def rendition(
    name: str, operations: Iterable[OperationLike] = (), *, preset: str = ""
) -> Rendition:
    """One output of a job: `name` (1..64 of a-z, 0-9, '_' and '-'), then imaging operations
    that run on the result of the job's operations, after the `preset`'s if one is named. No
    operations: the job's result as it is (in its own format)."""
    if not _RENDITION_NAME.fullmatch(name):
        raise ValueError(f"rendition names are 1..64 of a-z, 0-9, '_' and '-', not {name!r}")
    return Rendition(name=name, operations=coerce(operations, allow_empty=True), preset=preset)


def coerce_renditions(renditions: RenditionsLike | None) -> list[Rendition]:
    """Rendition messages, or a mapping name -> operations (a list, or one op), as Renditions;
    names checked and unique."""
    if renditions is None:
        return []
    if isinstance(renditions, Mapping):
        result = [
            rendition(name, [ops] if isinstance(ops, Operation | str) else ops)
            for name, ops in renditions.items()
        ]
    else:
        result = []
        for item in renditions:
            if not isinstance(item, Rendition):
                raise TypeError(
                    "renditions are Rendition messages (ops.rendition(...)) or a mapping of"
                    f" name -> operations, not {type(item).__name__}"
                )
            result.append(rendition(item.name, item.operations, preset=item.preset))
    seen: set[str] = set()
    for item in result:
        if item.name in seen:
            raise ValueError(f"rendition {item.name!r} is named twice")
        seen.add(item.name)
    return result


def parse_rendition(spec: str) -> Rendition:
    """Parse `NAME[=OP[;OP...]]`, the syntax of the CLI's `--rendition`: operations as for
    `parse`, separated by ';' (their own arguments use ','). An `@PRESET` element names a
    preset, e.g. "thumb=@small;convert=webp"."""
    name, _, rest = spec.strip().partition("=")
    preset = ""
    operations: list[Operation] = []
    for part in filter(None, (p.strip() for p in rest.split(";"))):
        if part.startswith("@"):
            if preset:
                raise ValueError(f"bad rendition {spec!r}: one preset at most")
            preset = part[1:].strip()
        else:
            operations.append(parse(part))
    try:
        return rendition(name.strip(), operations, preset=preset)
    except ValueError as exc:
        raise ValueError(f"bad rendition {spec!r}: {exc}") from None


def parse(spec: str) -> Operation:
    """Parse one `NAME[=ARGS]` operation, the syntax of the CLI's `--op`.

    resize=800x600[,fit|fill|force|fill_down|auto][,enlarge][,GRAVITY]  (800x or x600 keeps
      the aspect ratio; GRAVITY is a compass point like north_east, or smart)
    crop=X,Y,WIDTH,HEIGHT
    rotate=DEGREES[,#rrggbb]
    flip[=horizontal|vertical]
    orient[=auto|ignore]  (also orient:ignore; first operation only)
    convert=FORMAT[:QUALITY][,effort:N]  (FORMAT auto: chosen from the Accept header; effort
      0..6, WebP only: lower is faster and larger)
    metadata
    denoise[=auto|SIGMA][,model:NAME]
    blur=SIGMA
    sharpen[=SIGMA[,AMOUNT[,THRESHOLD]]]
    pixelate=SIZE
    adjust=brightness:N[,contrast:N][,saturation:N]  (each -100..100)
    grayscale
    duotone[=#SHADOW,#HIGHLIGHT]  and  sepia
    flatten[=#rrggbb]
    round_corners=RADIUS[,#rrggbb[aa]]
    trim[=THRESHOLD][,#rrggbb[aa]][,equal|equal_horizontal|equal_vertical]
    pad=TOP[,RIGHT[,BOTTOM[,LEFT]]][,#rrggbb[aa]]  (as in CSS)
    extend=[W]x[H][,ratio:R][,GRAVITY][,#rrggbb[aa]]
    frames=START[,COUNT]
    redact=X,Y,W,H[,X,Y,W,H...][,blur|pixelate][,strength:N]
    watermark and watermark_text have builders only.
    """
    name, sep, args = spec.strip().partition("=")
    if not sep:
        # NAME:ARGS reads as NAME=ARGS ("orient:ignore"); a name never holds a ':'.
        name, _, args = name.partition(":")
    name = name.strip().lower()
    parser = _PARSERS.get(name)
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise ValueError(f"unknown operation {name!r} in {spec!r}; expected one of: {known}")
    try:
        return parser(args.strip())
    except ValueError as exc:
        raise ValueError(f"bad operation {spec!r}: {exc}") from None


def coerce(operations: Iterable[OperationLike], *, allow_empty: bool = False) -> list[Operation]:
    """Turn a mix of Operations and `NAME=ARGS` strings into Operations, failing on the first bad
    one. `allow_empty`: no operations is fine (a preset or renditions stand for them)."""
    if isinstance(operations, Operation | str):
        raise TypeError("operations must be a list (of Operations or NAME=ARGS strings)")
    result = [op if isinstance(op, Operation) else parse(op) for op in operations]
    if not result and not allow_empty:
        raise ValueError("a pipeline needs at least one operation")
    for op in result:
        if op.WhichOneof("op") is None:
            raise ValueError("an Operation must have exactly one operation set")
    return result


def describe(op: Operation) -> str:
    """A short human label for an operation, e.g. "resize 800x600 fill"."""
    kind = op.WhichOneof("op")
    if kind == "resize":
        r = op.resize
        mode = operations_pb2.Resize.Mode.Name(r.mode or operations_pb2.Resize.FIT).lower()
        return f"resize {r.width or ''}x{r.height or ''} {mode}"
    if kind == "crop":
        c = op.crop
        return f"crop {c.width}x{c.height}+{c.x}+{c.y}"
    if kind == "rotate":
        return f"rotate {op.rotate.angle:g}"
    if kind == "flip":
        return f"flip {operations_pb2.Flip.Axis.Name(op.flip.axis or operations_pb2.Flip.HORIZONTAL).lower()}"
    if kind == "orient":
        orientation = op.orient.mode or operations_pb2.Orient.AUTO
        return f"orient {operations_pb2.Orient.Mode.Name(orientation).lower()}"
    if kind == "convert":
        conv = op.convert
        fmt = image_pb2.ImageFormat.Name(conv.format).lower()
        label = f"convert {fmt}" + (f":{conv.quality}" if conv.quality else "")
        return label + (f" effort {conv.effort}" if conv.HasField("effort") else "")
    if kind == "denoise":
        d = op.denoise
        return "denoise " + ("auto" if d.auto else f"sigma {d.sigma:g}" if d.sigma else "default")
    if kind is None:
        return "empty"
    # Other operations: their name and the fields that are set, e.g. "blur sigma=2".
    fields = getattr(op, kind).ListFields()
    return " ".join([kind, *(f"{f.name}={_short(v)}" for f, v in fields)])


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, operations_pb2.Gravity):
        return operations_pb2.Gravity.Anchor.Name(value.anchor).lower()
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"<{len(value)}>"
    return str(value)


# --- parsers for each NAME=ARGS form ---------------------------------------------------------


def _parse_resize(args: str) -> Operation:
    box, *flags = [part.strip().lower() for part in args.split(",")]
    width_text, sep, height_text = box.partition("x")
    if not sep or not (width_text or height_text):
        raise ValueError(
            "resize needs WIDTHxHEIGHT, e.g. resize=800x600, resize=800x or resize=x600"
        )
    mode, enlarge, gravity = "fit", False, ""
    for flag in flags:
        if flag == "enlarge":
            enlarge = True
        elif flag in _RESIZE_MODES:
            mode = flag
        elif flag in _ANCHORS:
            gravity = flag
        else:
            raise ValueError(
                f"unknown resize flag {flag!r}; use {_names(_RESIZE_MODES)}, enlarge or a"
                f" gravity ({_names(_ANCHORS)})"
            )
    width = _int("width", width_text) if width_text else 0
    height = _int("height", height_text) if height_text else 0
    return resize(width, height, mode, enlarge=enlarge, gravity=gravity)


def _parse_crop(args: str) -> Operation:
    parts = [p.strip() for p in args.split(",")]
    if len(parts) != 4:
        raise ValueError("crop needs X,Y,WIDTH,HEIGHT, e.g. crop=10,10,100,100")
    x, y, width, height = (
        _int(n, p) for n, p in zip(("x", "y", "width", "height"), parts, strict=True)
    )
    return crop(x, y, width, height)


def _parse_rotate(args: str) -> Operation:
    angle_text, _, background = args.partition(",")
    if not angle_text.strip():
        raise ValueError("rotate needs an angle in degrees, e.g. rotate=90")
    return rotate(_float("angle", angle_text), background.strip())


def _parse_flip(args: str) -> Operation:
    return flip(args or "horizontal")


def _parse_orient(args: str) -> Operation:
    return orient(args or "auto")


def _parse_convert(args: str) -> Operation:
    head, *flags = args.split(",")
    fmt, sep, quality = head.partition(":")
    if not fmt.strip():
        raise ValueError("convert needs a format, e.g. convert=webp or convert=webp:80")
    effort = None
    for flag in (f.strip().lower() for f in flags):
        key, _, value = flag.partition(":")
        if key.strip() != "effort":
            raise ValueError(f"unknown convert flag {flag!r}; use effort:N, e.g. webp:80,effort:2")
        if effort is not None:
            raise ValueError("convert effort is given twice")
        effort = _int("effort", value)
    return convert(fmt.strip(), _int("quality", quality) if sep else 0, effort=effort)


def _parse_metadata(args: str) -> Operation:
    if args:
        raise ValueError("metadata takes no arguments")
    return extract_metadata()


def _parse_denoise(args: str) -> Operation:
    auto, sigma, model = False, 0.0, ""
    for token in filter(None, (t.strip() for t in args.split(","))):
        if token.lower() == "auto":
            auto = True
        elif token.lower().startswith("model:"):
            model = token[len("model:") :].strip()
        else:
            sigma = _float("sigma", token)
    return denoise(auto=auto, sigma=sigma, model=model)


def _no_args(name: str, build: Callable[[], Operation]) -> Callable[[str], Operation]:
    def parse_it(args: str) -> Operation:
        if args:
            raise ValueError(f"{name} takes no arguments")
        return build()

    return parse_it


def _parse_blur(args: str) -> Operation:
    if not args:
        raise ValueError("blur needs a sigma in pixels, e.g. blur=2")
    return blur(_float("sigma", args))


def _parse_sharpen(args: str) -> Operation:
    parts = _parts(args)
    if len(parts) > 3:
        raise ValueError("sharpen takes SIGMA[,AMOUNT[,THRESHOLD]]")
    values = [*parts, "", "", ""][:3]
    return sharpen(
        _float("sigma", values[0]) if values[0] else 0.0,
        _float("amount", values[1]) if values[1] else 0.0,
        _int("threshold", values[2]) if values[2] else 0,
    )


def _parse_pixelate(args: str) -> Operation:
    if not args:
        raise ValueError("pixelate needs a block size in pixels, e.g. pixelate=12")
    return pixelate(_int("size", args))


def _parse_adjust(args: str) -> Operation:
    values: dict[str, float] = {}
    for token in _parts(args):
        key, sep, value = token.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("brightness", "contrast", "saturation"):
            raise ValueError(
                "adjust takes brightness:N, contrast:N and saturation:N, e.g. adjust=contrast:20"
            )
        values[key] = _float(key, value)
    return adjust(**values)


def _parse_duotone(args: str) -> Operation:
    parts = _parts(args)
    if len(parts) not in (0, 2):
        raise ValueError("duotone takes two colours, #SHADOW,#HIGHLIGHT (none: sepia)")
    return duotone(*parts)


def _parse_flatten(args: str) -> Operation:
    return flatten(args)


def _parse_round_corners(args: str) -> Operation:
    radius, _, background = args.partition(",")
    if not radius.strip():
        raise ValueError("round_corners needs a radius in pixels, e.g. round_corners=16")
    return round_corners(_int("radius", radius), background.strip())


def _parse_trim(args: str) -> Operation:
    threshold, color, horizontal, vertical = 0, "", False, False
    for token in _parts(args):
        lowered = token.lower()
        if token.startswith("#"):
            color = token
        elif lowered in ("equal", "equal_horizontal"):
            horizontal = True
            vertical = vertical or lowered == "equal"
        elif lowered == "equal_vertical":
            vertical = True
        else:
            threshold = _int("threshold", token)
    return trim(threshold, color, equal_horizontal=horizontal, equal_vertical=vertical)


def _parse_pad(args: str) -> Operation:
    parts = _parts(args)
    background = parts.pop() if parts and parts[-1].startswith("#") else ""
    if not 1 <= len(parts) <= 4:
        raise ValueError("pad needs 1..4 sides as in CSS, e.g. pad=10 or pad=10,20,10,20")
    sides = [
        _int(name, p) for name, p in zip(("top", "right", "bottom", "left"), parts, strict=False)
    ]
    return pad(*sides, background=background)


def _parse_extend(args: str) -> Operation:
    width = height = 0
    ratio, gravity, background = 0.0, "", ""
    for token in _parts(args):
        lowered = token.lower()
        if token.startswith("#"):
            background = token
        elif lowered.startswith("ratio:"):
            ratio = _float("ratio", lowered[len("ratio:") :])
        elif lowered in _COMPASS:
            gravity = lowered
        elif "x" in lowered:
            w, _, h = lowered.partition("x")
            width = _int("width", w) if w.strip() else 0
            height = _int("height", h) if h.strip() else 0
        else:
            raise ValueError(
                f"unknown extend argument {token!r}; use WxH, ratio:R, a gravity"
                f" ({_names(_COMPASS)}) or #rrggbb"
            )
    return extend(width, height, aspect_ratio=ratio, gravity=gravity, background=background)


def _parse_frames(args: str) -> Operation:
    parts = _parts(args)
    if not 1 <= len(parts) <= 2:
        raise ValueError("frames needs START[,COUNT], e.g. frames=0,1 for the first frame")
    return frames(*(_int(n, p) for n, p in zip(("start", "count"), parts, strict=False)))


def _parse_redact(args: str) -> Operation:
    numbers: list[int] = []
    method, strength = "blur", 0
    for token in _parts(args):
        lowered = token.lower()
        if lowered in _REDACT_METHODS:
            method = lowered
        elif lowered.startswith("strength:"):
            strength = _int("strength", lowered[len("strength:") :])
        else:
            numbers.append(_int("region", token))
    if not numbers or len(numbers) % 4:
        raise ValueError("redact needs regions as X,Y,W,H (four numbers each)")
    boxes = [
        (numbers[i], numbers[i + 1], numbers[i + 2], numbers[i + 3])
        for i in range(0, len(numbers), 4)
    ]
    return redact(boxes, method, strength)


_PARSERS: dict[str, Callable[[str], Operation]] = {
    "resize": _parse_resize,
    "crop": _parse_crop,
    "rotate": _parse_rotate,
    "flip": _parse_flip,
    "orient": _parse_orient,
    "convert": _parse_convert,
    "metadata": _parse_metadata,
    "extract_metadata": _parse_metadata,
    "denoise": _parse_denoise,
    "blur": _parse_blur,
    "sharpen": _parse_sharpen,
    "pixelate": _parse_pixelate,
    "adjust": _parse_adjust,
    "grayscale": _no_args("grayscale", grayscale),
    "greyscale": _no_args("greyscale", grayscale),
    "duotone": _parse_duotone,
    "sepia": _no_args("sepia", duotone),
    "flatten": _parse_flatten,
    "round_corners": _parse_round_corners,
    "trim": _parse_trim,
    "pad": _parse_pad,
    "extend": _parse_extend,
    "frames": _parse_frames,
    "redact": _parse_redact,
}


def _int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text.strip()!r}") from None


def _float(name: str, text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text.strip()!r}") from None


def _parts(args: str) -> list[str]:
    return [p.strip() for p in args.split(",")] if args.strip() else []


def _check_float(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if not low <= value <= high:  # NaN fails too
        raise ValueError(f"{name} must be within {low:g}..{high:g}, not {value:g}")


def _check_colour(name: str, value: str, *, alpha: bool = True) -> None:
    if value and not (_is_hex_colour(value) and (alpha or len(value) == 7)):
        shape = "#rrggbb or #rrggbbaa" if alpha else "#rrggbb"
        raise ValueError(f"{name} must be {shape}, not {value!r}")


def _choice(name: str, value: str, options: Mapping[str, int]) -> int:
    try:
        return options[value.lower()]
    except KeyError:
        raise ValueError(f"{name} must be one of {_names(options)}, not {value!r}") from None


def _gravity(
    name: str, value: GravityLike, anchors: Mapping[str, int], *, focus: bool = False
) -> operations_pb2.Gravity:
    if isinstance(value, tuple):
        if not focus:
            raise ValueError(f"{name} must be one of {_names(anchors)}, not a focus point")
        x, y = value
        _check_float(f"{name} x", x, 0, 1)
        _check_float(f"{name} y", y, 0, 1)
        return operations_pb2.Gravity(anchor=operations_pb2.Gravity.FOCUS_POINT, x=x, y=y)
    anchor = _choice(name, value, anchors)
    return operations_pb2.Gravity(anchor=anchor)  # type: ignore[arg-type]


def _place(
    msg: operations_pb2.Watermark | operations_pb2.WatermarkText,
    name: str,
    position: str,
    tile: bool,
    opacity: float | None,
) -> None:
    if position and tile:
        raise ValueError(f"{name} takes a position or tile, not both")
    if position:
        msg.position.CopyFrom(_gravity(f"{name} position", position, _COMPASS))
    if opacity is not None:
        _check_float(f"{name} opacity", opacity, 0, 1)
        msg.opacity = opacity


def _check_range(name: str, value: int, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, not {value}")


def _is_hex_colour(text: str) -> bool:
    digits = text[1:]
    return (
        text.startswith("#")
        and len(digits) in (6, 8)
        and all(c in "0123456789abcdefABCDEF" for c in digits)
    )


def _names(options: Iterable[str]) -> str:
    return ", ".join(options)
