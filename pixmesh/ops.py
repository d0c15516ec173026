"""Builders for pipeline operations, and the `NAME=ARGS` syntax the CLI accepts.

    >>> from pixmesh import ops
    >>> pipeline = [ops.resize(800, 600, mode="fill"), ops.convert("webp", quality=80)]
    >>> ops.parse("resize=800x600,fill") == pipeline[0]
    True

Builders check what can be checked without knowing the deployment (ranges, names); the gateway
still validates everything against its limits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.common.v1.operations_pb2 import Operation

__all__ = [
    "Operation",
    "OperationLike",
    "coerce",
    "convert",
    "crop",
    "denoise",
    "describe",
    "extract_metadata",
    "flip",
    "parse",
    "resize",
    "rotate",
]

# Either a built Operation or its `NAME=ARGS` spelling.
OperationLike = Operation | str

_RESIZE_MODES = {
    "fit": operations_pb2.Resize.FIT,
    "fill": operations_pb2.Resize.FILL,
    "force": operations_pb2.Resize.FORCE,
}
_FLIP_AXES = {
    "horizontal": operations_pb2.Flip.HORIZONTAL,
    "vertical": operations_pb2.Flip.VERTICAL,
}
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
    width: int = 0, height: int = 0, mode: str = "fit", *, enlarge: bool = False
) -> Operation:
    """Scale to a box; 0 for one side derives it from the aspect ratio (fit only)."""
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
    msg = operations_pb2.Resize(width=width, height=height, mode=mode_value, enlarge=enlarge)
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


def convert(format: str, quality: int = 0) -> Operation:
    """Encode to `format` ("webp", "jpeg", ...); quality 1..100, 0 for the format's default."""
    try:
        value = _FORMATS[format.lower()]
    except KeyError:
        raise ValueError(
            f"convert format must be one of {_names(_FORMATS)}, not {format!r}"
        ) from None
    _check_range("convert quality", quality, 0, 100)
    return Operation(convert=operations_pb2.Convert(format=value, quality=quality))


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


def parse(spec: str) -> Operation:
    """Parse one `NAME[=ARGS]` operation, the syntax of the CLI's `--op`.

    resize=800x600[,fit|fill|force][,enlarge]  (800x or x600 keeps the aspect ratio)
    crop=X,Y,WIDTH,HEIGHT
    rotate=DEGREES[,#rrggbb]
    flip[=horizontal|vertical]
    convert=FORMAT[:QUALITY]
    metadata
    denoise[=auto|SIGMA][,model:NAME]
    """
    name, _, args = spec.strip().partition("=")
    name = name.strip().lower()
    parser = _PARSERS.get(name)
    if parser is None:
        known = ", ".join(sorted(_PARSERS))
        raise ValueError(f"unknown operation {name!r} in {spec!r}; expected one of: {known}")
    try:
        return parser(args.strip())
    except ValueError as exc:
        raise ValueError(f"bad operation {spec!r}: {exc}") from None


def coerce(operations: Iterable[OperationLike]) -> list[Operation]:
    """Turn a mix of Operations and `NAME=ARGS` strings into Operations, failing on the first bad one."""
    result = [op if isinstance(op, Operation) else parse(op) for op in operations]
    if not result:
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
    if kind == "convert":
        fmt = image_pb2.ImageFormat.Name(op.convert.format).lower()
        return f"convert {fmt}" + (f":{op.convert.quality}" if op.convert.quality else "")
    if kind == "denoise":
        d = op.denoise
        return "denoise " + ("auto" if d.auto else f"sigma {d.sigma:g}" if d.sigma else "default")
    return kind or "empty"


# --- parsers for each NAME=ARGS form ---------------------------------------------------------


def _parse_resize(args: str) -> Operation:
    box, *flags = [part.strip().lower() for part in args.split(",")]
    width_text, sep, height_text = box.partition("x")
    if not sep or not (width_text or height_text):
        raise ValueError(
            "resize needs WIDTHxHEIGHT, e.g. resize=800x600, resize=800x or resize=x600"
        )
    mode, enlarge = "fit", False
    for flag in flags:
        if flag == "enlarge":
            enlarge = True
        elif flag in _RESIZE_MODES:
            mode = flag
        else:
            raise ValueError(
                f"unknown resize flag {flag!r}; use {_names(_RESIZE_MODES)} or enlarge"
            )
    width = _int("width", width_text) if width_text else 0
    height = _int("height", height_text) if height_text else 0
    return resize(width, height, mode, enlarge=enlarge)


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


def _parse_convert(args: str) -> Operation:
    fmt, sep, quality = args.partition(":")
    if not fmt.strip():
        raise ValueError("convert needs a format, e.g. convert=webp or convert=webp:80")
    return convert(fmt.strip(), _int("quality", quality) if sep else 0)


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


_PARSERS: dict[str, Callable[[str], Operation]] = {
    "resize": _parse_resize,
    "crop": _parse_crop,
    "rotate": _parse_rotate,
    "flip": _parse_flip,
    "convert": _parse_convert,
    "metadata": _parse_metadata,
    "extract_metadata": _parse_metadata,
    "denoise": _parse_denoise,
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
