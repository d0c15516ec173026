"""Resize: scale to a box, keeping the aspect ratio (FIT, FILL) or not (FORCE)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Resize
from services.imaging.errors import OUTPUT_TOO_LARGE
from services.imaging.ops.base import Context, OpSpec, Size, describe, round_half_up

Mode = Resize.Mode

# Pillow first shrinks by an integer factor with a box filter, then finishes with Lanczos from at
# least this many times the target: indistinguishable from pure Lanczos, much faster on big images.
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class ResizePlan:
    size: Size  # output size
    box: tuple[float, float, float, float]  # the part of the source that is scaled to `size`

    @property
    def reduction(self) -> float:
        """Source pixels per output pixel along the less reduced axis (>= 1 means a shrink)."""
        left, top, right, bottom = self.box
        return min((right - left) / self.size.width, (bottom - top) / self.size.height)


def plan(op: Resize, src: Size) -> ResizePlan:
    """Output size and source box; `op` must have passed `validate`."""
    sw, sh = src.width, src.height
    full = (0.0, 0.0, float(sw), float(sh))
    w, h = op.width, op.height
    if op.mode == Mode.FORCE:
        if not op.enlarge:
            w, h = min(w, sw), min(h, sh)
        return ResizePlan(Size(w, h), full)
    if op.mode == Mode.FILL:
        if not op.enlarge:
            # Keep the requested aspect ratio, shrinking the box until the source covers it.
            k = min(1.0, sw / w, sh / h)
            w, h = max(1, round_half_up(w * k)), max(1, round_half_up(h * k))
        # The largest centred region of the source with the output's aspect ratio.
        if sw * h > sh * w:
            cw = sh * w / h
            box = ((sw - cw) / 2, 0.0, (sw + cw) / 2, float(sh))
        else:
            ch = sw * h / w
            box = (0.0, (sh - ch) / 2, float(sw), (sh + ch) / 2)
        return ResizePlan(Size(w, h), box)
    # FIT (and MODE_UNSPECIFIED): 0 on one side derives it from the other.
    if w == 0:
        scale = h / sh
    elif h == 0:
        scale = w / sw
    else:
        scale = min(w / sw, h / sh)
    if not op.enlarge:
        scale = min(scale, 1.0)
    size = Size(max(1, round_half_up(sw * scale)), max(1, round_half_up(sh * scale)))
    return ResizePlan(size, full)


def validate(op: Resize, src: Size | None, ctx: Context) -> Size | None:
    if op.mode not in Mode.values():
        raise ctx.error("mode", f"unknown mode {op.mode}")
    for field, value in (("width", op.width), ("height", op.height)):
        if value > ctx.max_output_dimension:
            raise ctx.error(field, f"must be at most {ctx.max_output_dimension}", OUTPUT_TOO_LARGE)
    if op.mode in (Mode.FILL, Mode.FORCE):
        if op.width == 0 or op.height == 0:
            raise ctx.error("", f"{Mode.Name(op.mode)} needs both width and height")
    elif op.width == 0 and op.height == 0:
        raise ctx.error("", "set width, height or both")
    if src is None:
        return Size(op.width, op.height) if op.mode != Mode.FIT and op.enlarge else None
    return plan(op, src).size


def resize(
    img: Image.Image, op: Resize, source: Size | None = None, scale: float = 1.0
) -> Image.Image:
    """Resize `img`, planning on `source` when the pixels were already shrunk by `scale`.

    The pipeline decodes JPEGs with DCT scaling (draft) when a resize comes first: the plan is
    made on the full-size header so the output size does not depend on the shortcut.
    """
    p = plan(op, source or Size.of(img))
    box = (
        p.box[0] * scale,
        p.box[1] * scale,
        min(p.box[2] * scale, img.width),
        min(p.box[3] * scale, img.height),
    )
    if p.size == Size.of(img) and box == (0.0, 0.0, img.width, img.height):
        return img
    return img.resize(
        (p.size.width, p.size.height),
        Image.Resampling.LANCZOS,
        box=box,
        reducing_gap=REDUCING_GAP,
    )


def apply(img: Image.Image, op: Resize) -> Image.Image:
    return resize(img, op)


SPEC = OpSpec(
    name="resize",
    message=Resize,
    apply=apply,
    validate=validate,
    info=describe(
        "resize",
        Resize,
        "Scale the image to a box (Lanczos).",
        width=(
            "Target width in pixels; 0 derives it from height (FIT only).",
            "0..max_output_dimension",
        ),
        height=(
            "Target height in pixels; 0 derives it from width (FIT only).",
            "0..max_output_dimension",
        ),
        mode=(
            "FIT keeps the aspect ratio inside the box, FILL covers the box and crops the "
            "centre, FORCE stretches.",
            "MODE_UNSPECIFIED (=FIT), FIT, FILL, FORCE",
        ),
        enlarge=("Allow the output to be larger than the input.", "default false"),
    ),
)
