"""Builders for pipeline operations and renditions, and the `NAME=ARGS` syntax the CLI accepts.

    >>> from pixmesh import ops
    >>> pipeline = [ops.resize(800, 600, mode="fill"), ops.convert("webp", quality=80)]
    >>> ops.parse("resize=800x600,fill") == pipeline[0]
    True
    >>> ops.parse_rendition("thumb=resize=200x200,fill;convert=webp") == ops.rendition(
    ...     "thumb", [ops.resize(200, 200, "fill"), ops.convert("webp")]
    ... )
    True

Every operation of the contract has a builder named after its field of `Operation.op`: the ones
below keep their signatures; any other (a newer operation) is made from the proto on first use,
taking its fields in declaration order or by name (`ops.tint("#ff8800", strength=0.5)`). Each
builder also takes the message's other fields by name (`ops.convert("webp", lossless=True)`).
Values are converted as the field's type says (enum values by lower-case name, a Gravity by
anchor name or focus point, a Region by (x, y, width, height)) and checked against the
constraints written in the proto (`pixmesh.rules`, the same rules the gateway and imaging
apply). The gateway still checks everything against its limits and the image.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from pixmesh import rules
from pixmesh._opspec import (
    OPERATIONS,
    ArgumentError,
    build,
    choices,
    parse_args,
    positional,
    usage,
)
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
    "spellings",
    "trim",
    "watermark",
    "watermark_text",
]

# Either a built Operation or its `NAME=ARGS` spelling.
OperationLike = Operation | str
# Rendition messages, or a mapping of rendition name -> its operations (in insertion order).
RenditionsLike = Iterable[Rendition] | Mapping[str, Iterable[OperationLike] | OperationLike]
# Gravity for crop/fill: a compass point, "smart", or a focus point (x, y) in 0..1.
GravityLike = str | tuple[float, float]


def resize(
    width: int = 0,
    height: int = 0,
    mode: str = "fit",
    *,
    enlarge: bool = False,
    gravity: GravityLike = "",
    dpr: float = 0.0,
    **fields: object,
) -> Operation:
    """Scale to a box; 0 for one side derives it from the aspect ratio (fit only).

    mode: fit, fill, force, fill_down or auto (see Resize.Mode). gravity: which part fill,
    fill_down and auto keep: a compass point ("north_east"), "smart", or a focus point (x, y)
    in 0..1. dpr: device pixel ratio, the sizes are multiplied by it (0 means 1)."""
    return _op("resize", width=width, height=height, mode=mode, enlarge=enlarge, **fields,
               gravity=gravity or None, dpr=dpr)  # fmt: skip


def crop(x: int, y: int, width: int, height: int, **fields: object) -> Operation:
    """Cut out a rectangle; x, y is its top-left corner."""
    return _op("crop", x=x, y=y, width=width, height=height, **fields)


def rotate(angle: float, background: str = "") -> Operation:
    """Rotate clockwise by `angle` degrees (-360..360); `background` is "#rrggbb[aa]"."""
    return _op("rotate", angle=angle, background=background)


def flip(axis: str = "horizontal") -> Operation:
    """Mirror left-right ("horizontal") or top-bottom ("vertical")."""
    return _op("flip", axis=axis)


def orient(mode: str = "auto") -> Operation:
    """Whether the EXIF orientation is applied: "auto" (what happens anyway) turns the pixels
    upright, "ignore" keeps them as stored. Only as the job's first operation (before a
    preset's), never in a rendition."""
    return _op("orient", mode=mode)


def convert(
    format: str, quality: int = 0, *, effort: int | None = None, **fields: object
) -> Operation:
    """Encode to `format` ("webp", "jpeg", ...); quality 1..100, 0 for the format's default.
    "auto" lets the gateway pick AVIF, WebP or the input's format from the Accept header.

    `effort` (WebP only) is libwebp's encoder effort, 0 (fastest, largest) .. 6 (slowest,
    smallest); None leaves it to the service (4 unless PIXMESH_WEBP_EFFORT says otherwise).
    Measured on 800x600 photos at q80, 2 encodes in under half of 4's time for ~4% more bytes,
    0 in a quarter for ~27% more (BENCHMARKS.md, "Imaging"). Other Convert fields by name:
    `lossless=True`, `max_bytes=50_000`, ..."""
    if effort is not None and format.strip().lower() != "webp":
        # Stricter than Convert's rule, which lets `auto` through (the gateway may pick WebP):
        # an SDK caller who names the format gets the answer before any call.
        raise ArgumentError(f"convert effort applies to webp only, not {format!r}")
    if format.strip().lower() == "auto":
        return _op("convert", auto=True, quality=quality, effort=effort, **fields)
    return _op("convert", format=format, quality=quality, effort=effort, **fields)


def extract_metadata() -> Operation:
    """Read dimensions, format and EXIF; the result comes back in `Job.metadata`."""
    return _op("extract_metadata")


def denoise(
    *, auto: bool = False, sigma: float = 0.0, model: str = "", **fields: object
) -> Operation:
    """DnCNN denoising. `auto` estimates the noise level; `sigma` (0..255 scale) fixes it."""
    return _op("denoise", model=model, sigma=sigma, auto=auto, **fields)


def blur(sigma: float) -> Operation:
    """Gaussian blur; `sigma` is the standard deviation in pixels, 0.1..100."""
    return _op("blur", sigma=sigma)


def sharpen(sigma: float = 0.0, amount: float = 0.0, threshold: int = 0) -> Operation:
    """Unsharp mask. sigma 0.1..10 (0 means 1), amount 0..10 (0 means 1), threshold 0..255."""
    return _op("sharpen", sigma=sigma, amount=amount, threshold=threshold)


def pixelate(size: int) -> Operation:
    """Replace the image by blocks of `size` x `size` pixels (2..1024) of one colour."""
    return _op("pixelate", size=size)


def adjust(*, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> Operation:
    """Each from -100 (black, flat grey, grey) through 0 (unchanged) to 100 (twice)."""
    return _op("adjust", brightness=brightness, contrast=contrast, saturation=saturation)


def grayscale() -> Operation:
    """Shades of grey (alpha is kept)."""
    return _op("grayscale")


def duotone(shadow: str = "", highlight: str = "") -> Operation:
    """Map brightness to a gradient from `shadow` to `highlight` ("#rrggbb"); none: sepia."""
    return _op("duotone", shadow=shadow, highlight=highlight)


def flatten(background: str = "") -> Operation:
    """Lay the image over an opaque `background` ("#rrggbb", default white)."""
    return _op("flatten", background=background)


def round_corners(radius: int, background: str = "") -> Operation:
    """Round the corners with `radius` pixels; they become transparent or `background`."""
    return _op("round_corners", radius=radius, background=background)


def trim(
    threshold: int = 0,
    color: str = "",
    *,
    equal_horizontal: bool = False,
    equal_vertical: bool = False,
) -> Operation:
    """Cut away borders of one colour (default the top-left pixel's); `threshold` 0..255 is
    the largest per-channel difference still counted as border."""
    return _op("trim", threshold=threshold, color=color, equal_horizontal=equal_horizontal,
               equal_vertical=equal_vertical)  # fmt: skip


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
    return _op("pad", top=top, right=right, bottom=bottom, left=left, background=background)


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
    return _op("extend", width=width, height=height, aspect_ratio=aspect_ratio,
               gravity=gravity or None, background=background)  # fmt: skip


def frames(start: int = 0, count: int = 0) -> Operation:
    """Keep `count` frames of an animation from `start` (0-based); count 0 keeps the rest."""
    return _op("frames", start=start, count=count)


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
    return _op("watermark", image=image, position=position or None, margin=margin, scale=scale,
               opacity=opacity, tile=tile)  # fmt: skip


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
    return _op("watermark_text", text=text, position=position or None, margin=margin, size=size,
               color=color, outline_color=outline_color, opacity=opacity, tile=tile)  # fmt: skip


def redact(
    regions: Iterable[tuple[int, int, int, int]], method: str = "blur", strength: int = 0
) -> Operation:
    """Blur or pixelate rectangles (x, y, width, height), 1..64 of them; strength is the blur
    sigma or block size, 1..256 (0 means 16)."""
    return _op("redact", regions=list(regions), method=method, strength=strength)


def _op(name: str, **values: object) -> Operation:
    return build(name, values)


def _generic(name: str) -> Callable[..., Operation]:
    """The builder of an operation without one above: fields in declaration order, or by name."""
    fields = [field.name for field in OPERATIONS[name].fields]

    def builder(*args: object, **kwargs: object) -> Operation:
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes at most {len(fields)} positional arguments")
        return build(name, {**dict(zip(fields, args, strict=False)), **kwargs})

    described = rules.OPERATIONS[name]
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = "\n".join(
        [
            f"{described.description}\n\nCLI: {usage(name)}\n",
            *(f"{f.name}: {f.description} ({f.constraint})" for f in described.fields),
        ]
    )
    return builder


_GENERATED: dict[str, Callable[..., Operation]] = {}


def __getattr__(name: str) -> Callable[..., Operation]:
    if name not in OPERATIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _GENERATED:
        _GENERATED[name] = _generic(name)
    return _GENERATED[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *OPERATIONS})


def _builder(name: str) -> Callable[..., Operation]:
    """The builder of operation `name`: the function above, else the generic one."""
    found = globals().get(name)
    return found if callable(found) else __getattr__(name)


# --- renditions ----------------------------------------------------------------------------


def rendition(
    name: str, operations: Iterable[OperationLike] = (), *, preset: str = ""
) -> Rendition:
    """One output of a job: `name` (1..64 of a-z, 0-9, '_' and '-'), then imaging operations
    that run on the result of the job's operations, after the `preset`'s if one is named. No
    operations: the job's result as it is (in its own format)."""
    if not rules.RENDITION_NAME.fullmatch(name):
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

    Every operation takes its REST JSON (`convert={"format": "WEBP", "lossless": true}`) and
    the generic form of comma-separated tokens: `FIELD:VALUE`, a bool field's name, an enum
    value's name, or values for the fields in declaration order (`blur=2.5`,
    `adjust=contrast:20`, `rotate=90,#ff0000`, `sharpen=,3`; see pixmesh._opspec).
    These keep their shorter forms:

    resize=800x600[,fit|fill|force|fill_down|auto][,enlarge][,GRAVITY]  (800x or x600 keeps
      the aspect ratio; GRAVITY is a compass point like north_east, or smart)
    crop=X,Y,WIDTH,HEIGHT
    rotate=DEGREES[,#rrggbb]
    orient[=auto|ignore]  (also orient:ignore; first operation only)
    convert=FORMAT[:QUALITY][,effort:N]  (FORMAT auto: chosen from the Accept header; effort
      0..6, WebP only: lower is faster and larger)
    metadata  (extract_metadata)
    denoise[=auto|SIGMA][,model:NAME]
    grayscale (greyscale)
    duotone[=#SHADOW,#HIGHLIGHT]  and  sepia
    trim[=THRESHOLD][,#rrggbb[aa]][,equal|equal_horizontal|equal_vertical]
    pad=TOP[,RIGHT[,BOTTOM[,LEFT]]][,#rrggbb[aa]]  (as in CSS)
    extend=[W]x[H][,ratio:R][,GRAVITY][,#rrggbb[aa]]
    frames=START[,COUNT]
    redact=X,Y,W,H[,X,Y,W,H...][,blur|pixelate][,strength:N]
    """
    name, sep, args = spec.strip().partition("=")
    if not sep:
        # NAME:ARGS reads as NAME=ARGS ("orient:ignore"); a name never holds a ':'.
        name, _, args = name.partition(":")
    name = name.strip().lower()
    op = _ALIASES.get(name, name)
    if op not in OPERATIONS:
        known = ", ".join(sorted({*OPERATIONS, *_ALIASES}))
        raise ValueError(f"unknown operation {name!r} in {spec!r}; expected one of: {known}")
    try:
        return _parse(name, op, args.strip())
    except ValueError as exc:
        raise ValueError(f"bad operation {spec!r}: {exc}") from None
    except OSError as exc:  # a file the spec names (a watermark's image) cannot be read
        reason = exc.strerror or exc.__class__.__name__
        raise ValueError(f"bad operation {spec!r}: cannot read {exc.filename}: {reason}") from None


def spellings() -> str:
    """The operations' names for help texts, the short forms' examples first, e.g.
    "resize=800x600,fill, ..., tint=COLOR,..., ..."; every one also takes FIELD:VALUE."""
    return ", ".join(_EXAMPLES.get(name) or _spelling(name) for name in OPERATIONS)


def _spelling(name: str) -> str:
    slots = [field.name.upper() for field in positional(OPERATIONS[name])]
    return f"{name}={slots[0]}{',...' if slots[1:] else ''}" if slots else name


def _parse(name: str, op: str, args: str) -> Operation:
    if args.startswith("{"):
        _, params = parse_args(op, args)
        assert params is not None
        return build(op, {field.name: value for field, value in params.ListFields()})
    if args and (name in _NO_ARGS or not OPERATIONS[op].fields):
        raise ArgumentError(f"{name} takes no arguments")
    syntax = _SYNTAX.get(op)
    values = syntax(args) if syntax else parse_args(op, args)[0]
    builder = _builder(op)
    # A parameter the builder requires but ARGS left out gets the field's zero value, so that
    # the rules say what is wrong with it.
    defaults = getattr(Operation(), op)
    for param in inspect.signature(builder).parameters.values():
        if param.default is param.empty and param.name in OPERATIONS[op].fields_by_name:
            values.setdefault(param.name, getattr(defaults, param.name))
    try:
        return builder(**values)
    except ArgumentError as exc:
        if not args and exc.field:  # e.g. "blur=": the rule broken is that of the field left out
            article = "an" if exc.field[0] in "aeiou" else "a"
            raise ArgumentError(f"{op} needs {article} {exc.field.split('.')[0]}") from None
        raise


# How the short forms look, for help texts (`spellings`).
_EXAMPLES = {
    "resize": "resize=800x600[,fill|force|fill_down|auto][,enlarge]",
    "crop": "crop=X,Y,W,H",
    "rotate": "rotate=90",
    "convert": "convert=webp[:80][,effort:N]",
    "extract_metadata": "metadata",
    "denoise": "denoise=auto",
    "pad": "pad=10",
    "extend": "extend=1000x1000",
    "redact": "redact=X,Y,W,H",
    "orient": "orient=ignore (first only)",
}
# Other spellings of an operation's name; the ones in _NO_ARGS take no arguments.
_ALIASES = {"metadata": "extract_metadata", "greyscale": "grayscale", "sepia": "duotone"}
_NO_ARGS = frozenset({"sepia"})


# --- the shorter forms some operations had before the generic one ------------------------------
# Each turns ARGS into the builder's keyword arguments, checking only the syntax: the values go
# through the builder and the proto's rules like any others.


def _resize(args: str) -> dict[str, object]:
    box, _, flags = args.partition(",")
    width, sep, height = box.strip().lower().partition("x")
    if not sep or not (width.strip() or height.strip()):
        raise ArgumentError(
            "resize needs WIDTHxHEIGHT, e.g. resize=800x600, resize=800x or resize=x600"
        )
    values = _generic_args("resize", flags)
    values.update(_box("resize", width, height))
    return values


def _crop(args: str) -> dict[str, object]:
    parts = _parts(args)
    if len(parts) != 4 or not all(parts):
        raise ArgumentError("crop needs X,Y,WIDTH,HEIGHT, e.g. crop=10,10,100,100")
    return parse_args("crop", args)[0]


def _rotate(args: str) -> dict[str, object]:
    if not _parts(args) or not _parts(args)[0]:
        raise ArgumentError("rotate needs an angle in degrees, e.g. rotate=90")
    return parse_args("rotate", args)[0]


def _convert(args: str) -> dict[str, object]:
    head, *flags = args.split(",")
    fmt, sep, quality = head.partition(":")
    if not fmt.strip():
        raise ArgumentError("convert needs a format, e.g. convert=webp or convert=webp:80")
    for flag in flags:
        if flag.strip().lower().partition(":")[0].strip() != "effort":
            raise ArgumentError(
                f"unknown convert flag {flag.strip().lower()!r}; use effort:N, e.g. webp:80,effort:2"
            )
    values = _generic_args("convert", ",".join(flags))
    values["format"] = fmt.strip()
    if sep:
        values.update(_generic_args("convert", f"quality:{quality}"))
    return values


def _trim(args: str) -> dict[str, object]:
    tokens = _parts(args)
    equal = [t for t in tokens if t.lower() == "equal"]
    rest = [t for t in tokens if t.lower() != "equal"]
    values = _generic_args("trim", ",".join(rest))
    if equal:  # `equal` is both equal_horizontal and equal_vertical
        values.update(equal_horizontal=True, equal_vertical=True)
    return values


def _duotone(args: str) -> dict[str, object]:
    if len(_parts(args)) not in (0, 2):
        raise ArgumentError("duotone takes two colours, #SHADOW,#HIGHLIGHT (none: sepia)")
    return _generic_args("duotone", args)


def _pad(args: str) -> dict[str, object]:
    parts = _parts(args)
    background = parts.pop() if parts and parts[-1].startswith("#") else ""
    if not 1 <= len(parts) <= 4:
        raise ArgumentError("pad needs 1..4 sides as in CSS, e.g. pad=10 or pad=10,20,10,20")
    sides = _generic_args("pad", ",".join(parts))  # top, right, bottom, left in order
    return {**sides, "background": background}


def _extend(args: str) -> dict[str, object]:
    values: dict[str, object] = {}
    rest: list[str] = []
    for token in _parts(args):
        lowered = token.lower()
        if lowered.startswith("ratio:"):
            rest.append("aspect_ratio:" + lowered[len("ratio:") :])
        elif "x" in lowered and not lowered.startswith("#") and lowered not in _ANCHOR_NAMES:
            width, _, height = lowered.partition("x")
            values.update(_box("extend", width, height))
        elif lowered in _ANCHOR_NAMES and lowered not in _COMPASS:
            raise ArgumentError(
                f"unknown extend argument {token!r}; use WxH, ratio:R, a gravity"
                f" ({', '.join(_COMPASS)}) or #rrggbb"
            )
        else:
            rest.append(token)
    values.update(_generic_args("extend", ",".join(rest)))
    return values


def _frames(args: str) -> dict[str, object]:
    if not 1 <= len(_parts(args)) <= 2:
        raise ArgumentError("frames needs START[,COUNT], e.g. frames=0,1 for the first frame")
    return _generic_args("frames", args)


def _redact(args: str) -> dict[str, object]:
    numbers: list[int] = []
    rest: list[str] = []
    for token in _parts(args):
        if token.lower() in _REDACT_METHODS or ":" in token:
            rest.append(token)
        else:
            numbers.append(_int("region", token))
    if not numbers or len(numbers) % 4:
        raise ArgumentError("redact needs regions as X,Y,W,H (four numbers each)")
    values = _generic_args("redact", ",".join(rest))
    values["regions"] = [tuple(numbers[i : i + 4]) for i in range(0, len(numbers), 4)]
    return values


_SYNTAX: dict[str, Callable[[str], dict[str, object]]] = {
    "resize": _resize,
    "crop": _crop,
    "rotate": _rotate,
    "convert": _convert,
    "trim": _trim,
    "duotone": _duotone,
    "pad": _pad,
    "extend": _extend,
    "frames": _frames,
    "redact": _redact,
}
_GRAVITY_ANCHOR = operations_pb2.Gravity.DESCRIPTOR.fields_by_name["anchor"].enum_type
_ANCHOR_NAMES = frozenset(choices(_GRAVITY_ANCHOR))
_COMPASS = [n for n in choices(_GRAVITY_ANCHOR) if n not in ("focus_point", "smart")]
_REDACT_METHODS = frozenset(choices(operations_pb2.Redact.Method.DESCRIPTOR))


def _generic_args(op: str, args: str) -> dict[str, object]:
    return parse_args(op, args)[0]


def _box(op: str, width: str, height: str) -> dict[str, object]:
    """WIDTHxHEIGHT, either side may be empty (0)."""
    return {
        side: _generic_args(op, f"{side}:{text}")[side] if text.strip() else 0
        for side, text in (("width", width), ("height", height))
    }


def _int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ArgumentError(f"{name} must be a whole number, not {text.strip()!r}") from None


def _parts(args: str) -> list[str]:
    return [p.strip() for p in args.split(",")] if args.strip() else []


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
