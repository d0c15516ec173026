"""Resize: scale to a box, keeping the aspect ratio (FIT, FILL, FILL_DOWN, AUTO) or not (FORCE).

The modes follow imgproxy's: FILL covers the box and crops what sticks out (without enlarge an
image smaller than the box is not scaled up, so the output may be smaller than the box, in
another aspect ratio); FILL_DOWN shrinks the box instead, keeping its aspect ratio; AUTO is FILL
when the image and the box have the same orientation and FIT otherwise. The device pixel ratio
multiplies every size; min/max sizes then scale the output uniformly (max wins).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Resize
from services.imaging.errors import OUTPUT_TOO_LARGE
from services.imaging.ops import gravity
from services.imaging.ops.base import Context, OpSpec, Size, round_half_up

Mode = Resize.Mode

# Pillow first shrinks by an integer factor with a box filter (Image.reduce), then finishes with
# Lanczos from at least this many times the target. Measured on a 12 MP photo against plain
# Lanczos (tests/services/imaging/test_resize_reducing_gap.py keeps it so): at 4x to 13x
# reductions, channel values differ by at most 4 of 255 (7 next to synthetic hard edges) and by
# 0.2-0.3 on average, which is visually identical, and the resize is 2 to 6 times faster
# (4000 -> 800 px: 185 -> 70 ms). 3.0, the previous value, left reductions below 6x to plain
# Lanczos. 2.0 is also the gap of Pillow's own thumbnail() and of libvips' vips_resize. JPEGs are
# mostly shrunk while decoding (DCT scaling, pipeline._draft) to within 2x of the target, where
# the gap changes nothing.
REDUCING_GAP = 2.0
_CROPPING = (Mode.FILL, Mode.FILL_DOWN, Mode.AUTO)


@dataclass(frozen=True)
class ResizePlan:
    size: Size  # output size
    box: tuple[float, float, float, float]  # the part of the source that is scaled to `size`

    @property
    def reduction(self) -> float:
        """Source pixels per output pixel along the less reduced axis (>= 1 means a shrink)."""
        left, top, right, bottom = self.box
        return min((right - left) / self.size.width, (bottom - top) / self.size.height)


def plan(op: Resize, src: Size, image: Image.Image | None = None) -> ResizePlan:
    """Output size and source box; `op` must have passed `validate`.

    `image` (the source's pixels, at any scale) is only needed for SMART gravity; without it
    the box is centred, which does not change the size.
    """
    sw, sh = src.width, src.height
    w, h = _scaled(op, op.width), _scaled(op, op.height)
    mode = _mode(op, src)
    if mode == Mode.FORCE:
        size = Size(w, h) if op.enlarge else Size(min(w, sw), min(h, sh))
    elif mode == Mode.FILL:
        scale = max(w / sw, h / sh)
        if not op.enlarge:
            scale = min(scale, 1.0)
        size = Size(min(w, _side(sw * scale)), min(h, _side(sh * scale)))
    elif mode == Mode.FILL_DOWN:
        # Keep the requested aspect ratio, shrinking the box until the source covers it.
        k = 1.0 if op.enlarge else min(1.0, sw / w, sh / h)
        size = Size(_side(w * k), _side(h * k))
    else:  # FIT: 0 on one side derives it from the other.
        if w == 0:
            scale = h / sh
        elif h == 0:
            scale = w / sw
        else:
            scale = min(w / sw, h / sh)
        if not op.enlarge:
            scale = min(scale, 1.0)
        size = Size(_side(sw * scale), _side(sh * scale))
    size = _bounded(op, size)
    if mode not in _CROPPING:
        return ResizePlan(size, (0.0, 0.0, float(sw), float(sh)))
    # The largest region of the source with the output's aspect ratio, placed by gravity.
    if sw * size.height > sh * size.width:
        cw, ch = sh * size.width / size.height, float(sh)
    else:
        cw, ch = float(sw), sw * size.height / size.width
    x, y = gravity.place(op.gravity, (sw, sh), (cw, ch), image)
    return ResizePlan(size, (x, y, x + cw, y + ch))


def _mode(op: Resize, src: Size) -> Mode.ValueType:
    if op.mode == Mode.AUTO:
        same = (src.width >= src.height) == (op.width >= op.height)
        return Mode.FILL if same else Mode.FIT
    return op.mode


def _scaled(op: Resize, value: int) -> int:
    return round_half_up(value * (op.dpr or 1.0)) if value else 0


def _side(value: float) -> int:
    return max(1, round_half_up(value))


def _bounded(op: Resize, size: Size) -> Size:
    k = 1.0
    for low, side in ((op.min_width, size.width), (op.min_height, size.height)):
        if low:
            k = max(k, _scaled(op, low) / side)
    for high, side in ((op.max_width, size.width), (op.max_height, size.height)):
        if high:
            k = min(k, _scaled(op, high) / side)
    return size if k == 1.0 else Size(_side(size.width * k), _side(size.height * k))


def validate(op: Resize, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    for field in ("width", "height", "min_width", "min_height", "max_width", "max_height"):
        if _scaled(op, getattr(op, field)) > ctx.max_output_dimension:
            raise ctx.error(
                field,
                f"must be at most {ctx.max_output_dimension} (times the dpr)",
                OUTPUT_TOO_LARGE,
            )
    if op.HasField("gravity"):
        gravity.validate(op.gravity, ctx, "gravity")
    if src is not None:
        return plan(op, src).size
    bounded = op.min_width or op.min_height or op.max_width or op.max_height
    if op.mode in (Mode.FILL, Mode.FILL_DOWN, Mode.FORCE) and op.enlarge and not bounded:
        return Size(_scaled(op, op.width), _scaled(op, op.height))
    return None


def resize(
    img: Image.Image, op: Resize, source: Size | None = None, scale: float = 1.0
) -> Image.Image:
    """Resize `img`, planning on `source` when the pixels were already shrunk by `scale`.

    The pipeline decodes JPEGs with DCT scaling (draft) when a resize comes first: the plan is
    made on the full-size header so the output size does not depend on the shortcut.
    """
    p = plan(op, source or Size.of(img), img)
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
)
