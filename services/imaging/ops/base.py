"""What every imaging operation provides, and the helpers they share.

An operation is a proto message (its parameters), a pure `apply(image, params) -> image`, and a
`validate(params, size, ctx) -> size` that checks the parameters before any pixel is touched and
predicts the output size (None when it cannot be known), so that a whole pipeline can be
checked at the gateway, from the header alone.

`apply` sees one frame: the pipeline runs it on every frame of an animation. An operation that
cannot do that (its result would differ from frame to frame) rejects animations in `validate`,
where `ctx.frames` says how many frames the image has; `OpSpec.frames` is for the one operation
that chooses frames rather than changing them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message
from PIL import Image, ImageFilter

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from services.imaging.errors import INVALID_OPERATION
from services.runtime.errors import FieldViolation, InvalidArgument

SERVICE = "imaging"

M = TypeVar("M", bound=Message)
Colour = tuple[int, int, int, int]

WHITE: Colour = (255, 255, 255, 255)
TRANSPARENT: Colour = (0, 0, 0, 0)
COLOUR_FORMAT = '"#rrggbb" or "#rrggbbaa"'
_HEX = re.compile(r"#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})")


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def of(cls, image: Image.Image) -> Size:
        return cls(image.width, image.height)


@dataclass(frozen=True)
class Context:
    """Where an operation sits in the request, for field paths, and the limits it must respect."""

    path: str  # e.g. "operations[2].resize"
    max_output_dimension: int
    # Frames of the image at this step (> 1: an animation); None when not known yet.
    frames: int | None = 1

    @property
    def animated(self) -> bool:
        return self.frames is not None and self.frames > 1

    def colour(self, field: str, text: str, *, opaque: bool = False) -> Colour | None:
        """Parse a colour parameter, or raise with its field path."""
        expected = '"#rrggbb"' if opaque else COLOUR_FORMAT
        try:
            colour = parse_colour(text)
        except ValueError:
            raise self.error(field, f"must be {expected}") from None
        if opaque and colour is not None and colour[3] != 255:
            raise self.error(field, f"must be {expected} (opaque)")
        return colour

    def error(
        self, field: str, description: str, reason: str = INVALID_OPERATION
    ) -> InvalidArgument:
        where = f"{self.path}.{field}" if field else self.path
        return InvalidArgument(
            message=f"{where}: {description}",
            reason=reason,
            violations=(FieldViolation(where, description),),
        )


@dataclass(frozen=True)
class OpSpec(Generic[M]):
    name: str  # the Operation oneof field
    message: type[M]
    apply: Callable[[Image.Image, M], Image.Image]
    validate: Callable[[M, Size | None, Context], Size | None]
    # Which of `count` frames survive the operation; None for operations that keep them all.
    frames: Callable[[M, int], range] | None = None

    @property
    def info(self) -> operations_pb2.OperationInfo:
        """The ListOperations entry, from the proto: the message's and fields' comments and
        their buf.validate rules (pixmesh.rules); nothing is written beside them here."""
        return rules.operation_info(self.name, SERVICE)


def round_half_up(value: float) -> int:
    # Python's round() rounds half to even; sizes should not depend on parity.
    return int(value + 0.5)


def parse_colour(text: str) -> Colour | None:
    """ "#rrggbb" or "#rrggbbaa" as RGBA; None for "" (the operation's default)."""
    if not text:
        return None
    match = _HEX.fullmatch(text)
    if match is None:
        raise ValueError(text)
    digits = match.group(1) + ("ff" if len(match.group(1)) == 6 else "")
    r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


def has_alpha(img: Image.Image) -> bool:
    return img.mode in ("LA", "RGBA")


def on_colour(img: Image.Image, change: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """`change` applied to the colour (or grey) channels only; the alpha channel, if any, is put
    back as it was."""
    if not has_alpha(img):
        return change(img)
    out = change(img.convert(img.mode[:-1]))
    out.putalpha(img.getchannel("A"))
    return out


def canvas(img: Image.Image, size: tuple[int, int], colour: Colour | None) -> Image.Image:
    """A background of `size` for `img`, in the smallest normalised mode that holds both.

    `colour` None is the default background of every operation that grows the canvas: white,
    or transparent when the image has alpha.
    """
    fill = colour or (TRANSPARENT if has_alpha(img) else WHITE)
    keep_alpha = has_alpha(img) or fill[3] < 255
    grey = img.mode in ("L", "LA") and fill[0] == fill[1] == fill[2]
    if grey:
        return Image.new("LA" if keep_alpha else "L", size, fill[0::3] if keep_alpha else fill[0])
    return Image.new("RGBA" if keep_alpha else "RGB", size, fill if keep_alpha else fill[:3])


def paste(background: Image.Image, img: Image.Image, at: tuple[int, int]) -> Image.Image:
    """`img` laid over `background` at `at` (blending alpha), in the background's mode."""
    if not has_alpha(img):
        # Opaque: it simply covers what is underneath.
        background.paste(img.convert(background.mode), at)
        return background
    out = background.convert("RGBA")
    composite(out, img.convert("RGBA"), at)
    return out if background.mode == "RGBA" else out.convert(background.mode)


def composite(base: Image.Image, patch: Image.Image, at: tuple[int, int]) -> None:
    """Blend `patch` over `base` (both RGBA) in place at `at`, clipping what falls outside."""
    x, y = at
    left, top = max(0, -x), max(0, -y)
    right = min(patch.width, base.width - x)
    bottom = min(patch.height, base.height - y)
    if left >= right or top >= bottom:
        return
    base.alpha_composite(patch, dest=(x + left, y + top), source=(left, top, right, bottom))


def filtered(img: Image.Image, image_filter: ImageFilter.Filter) -> Image.Image:
    """Apply a convolution without bleeding the colour of transparent pixels into visible ones.

    With alpha the filter runs on premultiplied colours (what libvips does too): transparent
    black must not darken the edges of an opaque shape.
    """
    if not has_alpha(img):
        return img.filter(image_filter)
    premultiplied = "RGBa" if img.mode == "RGBA" else "La"
    return img.convert(premultiplied).filter(image_filter).convert(img.mode)
