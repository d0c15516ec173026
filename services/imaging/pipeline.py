"""The imaging pipeline, as an explicit list of steps (after imgproxy's processing/pipeline.go).

    probe → validate → decode → orient → normalize → operations… → strip → encode

Everything that can be checked from the header is checked before a pixel is decoded. The deadline
is checked before every step, each step gets a span, and its duration is returned with the result
so the caller can export metrics. Operations are pure functions of an image: all the decisions
that need the whole pipeline (JPEG DCT scaling, output format, metadata) are taken here.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import trace
from PIL import Image, ImageFile, ImageOps

from pixmesh.common.v1 import operations_pb2
from services.imaging.encode import choose_format, encode
from services.imaging.errors import DEADLINE_EXCEEDED, IMAGE_CORRUPT, TOO_MANY_PIXELS
from services.imaging.limits import Limits
from services.imaging.ops import Size, resize
from services.imaging.validation import Plan, check_operation, output_settings, validate_pipeline
from services.runtime import imageprobe
from services.runtime.errors import DeadlineExceeded, InvalidArgument
from services.runtime.imageprobe import Format, ImageHeader, extension_for, mime_for

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

# What a Pillow decoder raises on bad data. Caught around decoding only, where it can only mean
# that the input is broken; elsewhere the same exceptions are bugs and must stay loud.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    RuntimeError,
)


@dataclass(frozen=True)
class PipelineResult:
    data: bytes
    format: Format
    width: int
    height: int
    content_type: str
    extension: str
    # The input was animated (or multi-page) and only its first frame was processed. Full
    # animation support is a later issue; until then the caller can tell the user.
    flattened: bool
    # Seconds spent in each step, for metrics.
    timings: Mapping[str, float] = field(default_factory=dict)


def deadline_after(seconds: float | None) -> float | None:
    """The `deadline` argument of `run` for a budget of `seconds` from now (None: no deadline)."""
    return None if seconds is None else time.monotonic() + seconds


def run(
    data: bytes,
    operations: Sequence[operations_pb2.Operation],
    *,
    limits: Limits,
    deadline: float | None = None,
    default_format: Format | None = None,
) -> PipelineResult:
    """Run `operations` on the encoded image `data` and encode the result.

    `deadline` is an absolute `time.monotonic()` value (see `deadline_after`); None means none.
    The output format is the last Convert's, else `default_format`, else the input's when it can
    be written (otherwise PNG, or JPEG for HEIF photos). Raises InvalidArgument for bad input
    or operations, DeadlineExceeded when the deadline passes between two steps.
    """
    with _tracer.start_as_current_span("imaging.pipeline") as span:
        span.set_attribute("pixmesh.operations", len(operations))
        result = _run(data, operations, limits, deadline, default_format)
        span.set_attributes(
            {
                "pixmesh.output.format": mime_for(result.format),
                "pixmesh.output.width": result.width,
                "pixmesh.output.height": result.height,
                "pixmesh.output.bytes": len(result.data),
                "pixmesh.flattened": result.flattened,
            }
        )
        return result


def _run(
    data: bytes,
    operations: Sequence[operations_pb2.Operation],
    limits: Limits,
    deadline: float | None,
    default_format: Format | None,
) -> PipelineResult:
    steps = _Steps(deadline)
    with steps.step("probe"):
        header, source = imageprobe.open_image(data, limits.probe)
    try:
        with steps.step("validate"):
            plan = validate_pipeline(operations, header, limits, default_format=default_format)
        with steps.step("decode"), _decode_errors():
            scale = _draft(source, header, plan)
            source.load()
        with steps.step("orient"):
            _orient(source)
        with steps.step("normalize"):
            img = normalize_mode(source)
        for i, planned in enumerate(plan.operations):
            with steps.step(f"op{i}.{planned.name}"):
                if i == 0 and scale != 1.0:
                    # Planned on the full-size header; the pixels were DCT-scaled by `scale`.
                    assert isinstance(planned.params, operations_pb2.Resize)
                    img = resize.resize(
                        img, planned.params, Size(header.width, header.height), scale
                    )
                else:
                    checked = check_operation(i, operations[i], Size.of(img), limits)
                    assert checked.spec is not None
                    img = checked.spec.apply(img, checked.params)
        with steps.step("strip"):
            img = strip(img)
        with steps.step("encode"):
            requested, quality = output_settings(plan.operations, default_format)
            fmt = choose_format(requested, header.format, img.mode in ("LA", "RGBA"))
            out = encode(img, fmt, quality)
    finally:
        source.close()
    return PipelineResult(
        data=out,
        format=fmt,
        width=img.width,
        height=img.height,
        content_type=mime_for(fmt),
        extension=extension_for(fmt),
        flattened=header.frame_count > 1,
        timings=steps.timings,
    )


class _Steps:
    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(
                message=f"the deadline passed before the {name} step", reason=DEADLINE_EXCEEDED
            )
        start = time.perf_counter()
        with _tracer.start_as_current_span(f"imaging.{name}"):
            yield
        self.timings[name] = time.perf_counter() - start


def _draft(source: ImageFile.ImageFile, header: ImageHeader, plan: Plan) -> float:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 size when the first operation shrinks that much.

    Only for a leading resize: anything before it would work in full-size coordinates. The
    factor keeps the decoded image at least as large as the resize's output (no extra margin:
    libjpeg's scaled IDCT is a proper low-pass, like libvips' shrink-on-load). Returns the scale
    of the decoded pixels (1.0 when not drafted); draft is a no-op for formats other than JPEG.
    """
    if not plan.operations or not isinstance(plan.operations[0].params, operations_pb2.Resize):
        return 1.0
    reduction = resize.plan(plan.operations[0].params, Size(header.width, header.height)).reduction
    factor = next((f for f in (8, 4, 2) if reduction >= f), 1)
    if factor == 1:
        return 1.0
    width, height = header.stored_size
    drafted = source.draft(None, (width // factor, height // factor))
    if drafted is None:
        return 1.0
    _, box = drafted
    return box[2] / width


@contextmanager
def _decode_errors() -> Iterator[None]:
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(
            message="the image has too many pixels", reason=TOO_MANY_PIXELS
        ) from exc
    except _DECODE_ERRORS as exc:
        log.info("undecodable image: %r", exc)
        raise InvalidArgument(
            message="the image data is corrupt or truncated", reason=IMAGE_CORRUPT
        ) from exc


def _orient(image: Image.Image) -> None:
    """Apply the EXIF orientation in place (on the source, whose TIFF tags hold it for TIFFs)."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # malformed EXIF is common and never worth failing a job for
        log.info("ignoring unreadable EXIF orientation: %r", exc)


def normalize_mode(img: Image.Image) -> Image.Image:
    """Bring any decoded mode to L, LA, RGB or RGBA, the modes every operation and encoder take.

    Palette images are expanded so that resampling filters work on colours, not indexes.
    """
    mode = img.mode
    if mode in ("L", "RGB"):
        # A colour-key transparency (PNG tRNS) becomes a real alpha channel.
        return img.convert("RGBA") if "transparency" in img.info else img
    if mode in ("LA", "RGBA"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in img.info
        alpha = alpha or (img.palette is not None and img.palette.mode == "RGBA")
        return img.convert("RGBA" if alpha else "RGB")
    if mode.startswith("I"):
        # 16/32-bit grey: scale to 8 bits (a plain convert would clip everything above 255).
        return img.convert("I").point(lambda v: v * (1 / 257) + 0.5).convert("L")
    if mode == "F":
        return img.convert("L")
    if mode == "La":
        return img.convert("LA")
    # CMYK, YCbCr, LAB, HSV, RGBX, RGBa.
    return img.convert("RGBA" if mode == "RGBa" else "RGB")


def strip(img: Image.Image) -> Image.Image:
    """Drop all metadata but the ICC profile (colours would be wrong without it)."""
    if isinstance(img, ImageFile.ImageFile):
        # Still the decoded file: encoders copy some tags straight from it (TIFF keeps XMP and
        # IPTC), so hand them a plain image.
        img = img.copy()
    icc = img.info.get("icc_profile")
    img.info = {"icc_profile": icc} if icc else {}
    return img
