"""The imaging pipeline, as an explicit list of steps (after imgproxy's processing/pipeline.go).

    probe → validate → decode → orient → colour → normalize → operations… → strip → encode

The orient step applies the EXIF orientation unless the pipeline starts with `orient {mode:
IGNORE}` (`Plan.auto_orient`); with renditions, the shared operations decide it for all of them.

Everything that can be checked from the header is checked before a pixel is decoded. The deadline
is checked before every step, each step gets a span, and its duration is returned with the result
so the caller can export metrics. Operations are pure functions of an image: all the decisions
that need the whole pipeline (JPEG DCT scaling, output format, metadata, frames) are taken here.

An animation is decoded into all its frames (each one whole, as displayed), every operation runs
on every frame, and the frames are encoded together with their durations: validation has already
refused what cannot stay animated.

`run` makes every output of one source: it decodes once, runs the job's operations once, then
for each output runs its own operations on the shared frames and encodes them. The outputs are a
job's renditions, or for a plain job one unnamed rendition without operations of its own (whose
steps keep their plain names):

    probe → validate → decode → orient → colour → normalize → operations…
          → <name>.op0… → <name>.strip → <name>.encode   (for each rendition, in order)

Operations never modify the image they are given (they return a new one, or the same one
unchanged), so the renditions share the frames without copying them; `strip` only replaces the
metadata (`info`), which nothing reads after the colour step, and puts the decoded file's pixels
in a plain image (no copy of them).
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

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.colour import profile_for, same_pixels, to_srgb
from services.imaging.encode import (
    WEBP_EFFORT,
    MaxBytesUnreachable,
    choose_format,
    copyright_exif,
    encode,
)
from services.imaging.errors import (
    DEADLINE_EXCEEDED,
    IMAGE_CORRUPT,
    MAX_BYTES_UNREACHABLE,
    TOO_MANY_PIXELS,
)
from services.imaging.limits import Limits
from services.imaging.ops import Context, Size, resize
from services.imaging.validation import (
    Plan,
    PlannedOp,
    check_operation,
    check_output,
    in_rendition,
    outputs_of,
    source_size,
    validate_job,
)
from services.imaging.xmp import provenance_xmp
from services.runtime import imageprobe
from services.runtime.errors import DeadlineExceeded, InvalidArgument
from services.runtime.imageprobe import Format, ImageHeader, extension_for, mime_for
from services.runtime.pixels import normalize_mode

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
    # The input had several pictures that are not an animation (TIFF pages, a HEIF collection)
    # and only the first or primary one was processed. Animations are never flattened: they
    # stay animated, or the pipeline is refused, or a `frames` operation picked the frames.
    flattened: bool
    # Seconds spent in each step, for metrics.
    timings: Mapping[str, float] = field(default_factory=dict)
    # Frames in the output (1: a still image).
    frames: int = 1
    # The input's format (what was decoded), for metrics by format.
    source_format: Format = image_pb2.ImageFormat.IMAGE_FORMAT_UNSPECIFIED


@dataclass(frozen=True)
class Decoded:
    """A still already in memory (a video frame): `run` takes it as decoded by `header`, with
    no encoded intermediate and no copy of its pixels (a 4K frame is 33 MB in Pillow)."""

    header: ImageHeader
    image: Image.Image


@dataclass(frozen=True)
class Outputs:
    """What `run` returns: one result per output, in order: a job's renditions by name, or a
    plain job's one unnamed ("") output."""

    renditions: tuple[tuple[str, PipelineResult], ...]
    # Seconds spent in the steps before the outputs branch off (probe … the job's operations);
    # each output's own steps are in its `timings`.
    shared_timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def image(self) -> PipelineResult:
        """A plain job's output (its one unnamed rendition)."""
        [(name, result)] = self.renditions
        assert not name, "a job with renditions has no single image"
        return result

    @property
    def timings(self) -> dict[str, float]:
        """Every step in the order it ran; a rendition's steps are prefixed with its name."""
        steps = dict(self.shared_timings)
        for _, result in self.renditions:
            steps.update(result.timings)
        return steps


def deadline_after(seconds: float | None) -> float | None:
    """The `deadline` argument of `run` for a budget of `seconds` from now (None: no deadline)."""
    return None if seconds is None else time.monotonic() + seconds


def run(
    data: bytes | Decoded,
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition] = (),
    *,
    limits: Limits,
    deadline: float | None = None,
    default_format: Format | None = None,
    webp_effort: int = WEBP_EFFORT,
    provenance: Mapping[str, str] | None = None,
) -> Outputs:
    """Run `operations` on the encoded image `data` once, then make each output from their
    result: each of `renditions` with its own operations, or (none given: a plain job) the one
    unnamed output of `operations` alone.

    `deadline` is an absolute `time.monotonic()` value (see `deadline_after`); None means none.
    An output's format is the last Convert's (its own, else the job's), else `default_format`,
    else the input's when it can be written (otherwise PNG, or JPEG for HEIF photos). A WebP is
    encoded at the Convert's effort, else at `webp_effort` (the deployment's default). With
    Convert.provenance the output embeds `provenance` (see xmp.provenance_xmp) as XMP.

    A rendition gives what a plain job of `[*operations, *rendition.operations]` would, but the
    source is decoded once. The one difference: when the renditions start with their own
    resizes, a JPEG is DCT-scaled only as far as the largest of them allows, so the smaller
    ones are made from more pixels than they would be alone. Every output is validated before
    anything is decoded; errors in a rendition's operations name it
    (`renditions[1].operations[0].resize`). Raises InvalidArgument for bad input or operations,
    DeadlineExceeded when the deadline passes between two steps.
    """
    with _tracer.start_as_current_span("imaging.pipeline") as span:
        span.set_attribute("pixmesh.operations", len(operations))
        if renditions:
            span.set_attribute("pixmesh.renditions", len(renditions))
        result = _run(
            data, operations, renditions, limits, deadline, default_format, webp_effort, provenance
        )
        if not renditions:
            span.set_attributes(output_attributes(result.image))
        return result


def output_attributes(result: PipelineResult) -> dict[str, str | int | bool]:
    """Span attributes describing an output."""
    return {
        "pixmesh.output.format": mime_for(result.format),
        "pixmesh.output.width": result.width,
        "pixmesh.output.height": result.height,
        "pixmesh.output.bytes": len(result.data),
        "pixmesh.output.frames": result.frames,
        "pixmesh.flattened": result.flattened,
    }


@dataclass
class _Frames:
    """The image between two steps."""

    images: list[Image.Image]  # one per frame: one for a still image
    durations: list[int]  # ms per frame, for animations
    loop: int | None  # None: play once
    # Of the pixels relative to the header's size: below 1 after a JPEG draft, until the first
    # operation (a resize, planned on the header's size) has run.
    scale: float = 1.0

    def branch(self) -> _Frames:
        """The same frames, for a rendition to replace with its own."""
        return _Frames(list(self.images), list(self.durations), self.loop, self.scale)


def _run(
    data: bytes | Decoded,
    operations: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
    limits: Limits,
    deadline: float | None,
    default_format: Format | None,
    webp_effort: int,
    provenance: Mapping[str, str] | None,
) -> Outputs:
    steps = _Steps(deadline)
    with steps.step("probe"):
        if isinstance(data, Decoded):
            header, source = data.header, data.image
        else:
            header, source = imageprobe.open_image(data, limits.probe)
    shared = len(operations)
    results = []
    try:
        with steps.step("validate"):
            plans = validate_job(
                operations, renditions, header, limits, default_format=default_format
            )
        frames, exif, icc = _decode(source, header, plans, steps)
        # The orientation is the shared operations' decision (renditions have no orient).
        full = source_size(header, plans[0].auto_orient)
        _apply(frames, operations, plans[0].operations[:shared], full, limits, steps)
        shared_timings = dict(steps.timings)
        for i, (rendition, plan) in enumerate(zip(outputs_of(renditions), plans, strict=True)):
            name = rendition.name
            with _output(name, i, shared) as span:
                own = steps.child(name)
                branch = frames.branch()
                k = _reduction(branch, plan, header) if not shared else 1
                if k > 1:
                    with own.step("reduce"):
                        _reduce(branch, k)
                _apply(branch, rendition.operations, plan.operations[shared:], full, limits, own)
                xmp = _xmp(plan, provenance, [*operations, *rendition.operations])
                result = _encode(branch, plan, header, limits, exif, icc, own, webp_effort, xmp)
                if span is not None:
                    span.set_attributes(output_attributes(result))
            results.append((name, result))
    finally:
        source.close()
    return Outputs(tuple(results), shared_timings)


@contextmanager
def _output(name: str, index: int, shared: int) -> Iterator[trace.Span | None]:
    """The context of making output `index`: a rendition has a span of its own, and its errors
    name its fields (validation.in_rendition); a plain job's unnamed output has neither."""
    if not name:
        yield None
        return
    with in_rendition(index, shared), _tracer.start_as_current_span("imaging.rendition") as span:
        span.set_attribute("pixmesh.rendition", name)
        yield span


def _decode(
    source: Image.Image, header: ImageHeader, plans: Sequence[Plan], steps: _Steps
) -> tuple[_Frames, bytes | None, bytes | None]:
    """decode → orient → colour → normalize, for the outputs of `plans` (they share the first
    operations, so they agree on auto_orient, and on keep_icc). Returns the frames, the
    copyright EXIF to keep (read when one of the plans keeps it) and the ICC profile (when
    kept)."""
    keep_icc = plans[0].options.keep_icc
    with steps.step("decode"), _decode_errors():
        keep_copyright = any(plan.options.keep_copyright for plan in plans)
        exif = _copyright(source) if keep_copyright else None
        if plans[0].input_frames > 1:
            scale = 1.0
            images, durations, loop = _frames(source, plans[0].input_frames)
        else:
            scale = _draft(source, header, plans)
            source.load()
            images, durations, loop = [source], [], None
    with steps.step("orient"):
        if plans[0].auto_orient:
            images = _orient(images, header)
    with steps.step("colour"):
        images = [to_srgb(f, keep_icc=keep_icc) for f in images]
        # Carried beside the pixels: operations that build new images drop `info`.
        icc = images[0].info.get("icc_profile") if keep_icc else None
    with steps.step("normalize"):
        images = _normalize_all(images)
    return _Frames(images, durations, loop, scale), exif, icc


def _apply(
    frames: _Frames,
    operations: Sequence[operations_pb2.Operation],
    planned: Sequence[PlannedOp],
    full: Size,
    limits: Limits,
    steps: _Steps,
) -> None:
    """Run `operations` on `frames` (replacing its images); `planned` are their plans, whose
    indexes are the operations' places in the whole pipeline. `full` is the size of the
    decoded image at scale 1, after the orient step (as displayed, or as stored)."""
    for i, (op, step) in enumerate(zip(operations, planned, strict=True)):
        with steps.step(f"op{i}.{step.name}"):
            if frames.scale != 1.0 and step.name != "orient":
                # The leading resize (after an orient, which keeps the pixels as they are),
                # planned on the full-size header; the pixels were DCT-scaled by `scale`.
                assert isinstance(step.params, operations_pb2.Resize)
                frames.images = [resize.resize(frames.images[0], step.params, full, frames.scale)]
                frames.scale = 1.0
                continue
            checked = check_operation(
                step.index, op, Size.of(frames.images[0]), limits, frames=len(frames.images)
            )
            assert checked.spec is not None
            if checked.spec.frames is not None:
                kept = checked.spec.frames(checked.params, len(frames.images))
                frames.images = [frames.images[k] for k in kept]
                frames.durations = [frames.durations[k] for k in kept] if frames.durations else []
            frames.images = [checked.spec.apply(f, checked.params) for f in frames.images]


def _encode(
    frames: _Frames,
    plan: Plan,
    header: ImageHeader,
    limits: Limits,
    exif: bytes | None,
    icc: bytes | None,
    steps: _Steps,
    webp_effort: int,
    xmp: bytes | None = None,
) -> PipelineResult:
    """strip → encode, as `plan` says (`exif` and `icc` as `_decode` returned them; a WebP at
    `webp_effort` unless the Convert sets one)."""
    options = plan.options
    if plan.output_size is None:
        check_output(Size.of(frames.images[0]), limits)
    with steps.step("strip"):
        images = [strip(f) for f in frames.images]
    with steps.step("encode"):
        img = images[0]
        alpha = img.mode in ("LA", "RGBA")
        fmt = choose_format(plan.requested_format, header.format, alpha)
        try:
            out = encode(
                images,
                fmt,
                options,
                durations=frames.durations,
                loop=frames.loop,
                icc=profile_for(icc, img.mode),
                exif=exif if options.keep_copyright else None,
                webp_effort=webp_effort,
                xmp=xmp,
            )
        except MaxBytesUnreachable as exc:
            assert plan.convert is not None  # validation allows max_bytes in a Convert only
            ctx = Context(f"operations[{plan.convert.index}].convert", 0)
            raise ctx.error(
                "max_bytes", f"{exc} (quality 1); raise max_bytes", MAX_BYTES_UNREACHABLE
            ) from None
    return PipelineResult(
        data=out,
        format=fmt,
        width=img.width,
        height=img.height,
        content_type=mime_for(fmt),
        extension=extension_for(fmt),
        flattened=header.frame_count > plan.input_frames,
        timings=steps.timings,
        frames=len(images),
        source_format=header.format,
    )


def _xmp(
    plan: Plan,
    provenance: Mapping[str, str] | None,
    operations: Sequence[operations_pb2.Operation],
) -> bytes | None:
    """The XMP to embed: only with Convert.provenance, when the caller gave the facts."""
    if provenance is None or not plan.options.provenance:
        return None
    return provenance_xmp(provenance, operations)


class _Steps:
    """Times the steps (keys `prefix + name`, in order) and checks the deadline before each."""

    def __init__(self, deadline: float | None, prefix: str = "") -> None:
        self.deadline = deadline
        self.prefix = prefix
        self.timings: dict[str, float] = {}

    def child(self, name: str) -> _Steps:
        """The steps of rendition `name`, timed apart as `name.<step>` (a plain job's unnamed
        output: as `<step>`)."""
        return _Steps(self.deadline, f"{self.prefix}{name}." if name else self.prefix)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        key = self.prefix + name
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(
                message=f"the deadline passed before the {key} step", reason=DEADLINE_EXCEEDED
            )
        start = time.perf_counter()
        with _tracer.start_as_current_span(f"imaging.{key}"):
            yield
        self.timings[key] = time.perf_counter() - start


def _draft(source: Image.Image, header: ImageHeader, plans: Sequence[Plan]) -> float:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 size when the first operation shrinks that much.

    Only for a leading resize: anything before it would work in full-size coordinates (but an
    orient may come first: it changes no pixel after the decode, and with IGNORE the resize is
    planned on the stored size). The factor keeps the decoded image at least as large as the
    resize's output (no extra margin: libjpeg's scaled IDCT is a proper low-pass, like libvips'
    shrink-on-load). With several outputs of one decode (renditions), each must start with a
    resize and the least reduced one decides, so that the largest output is as good as if it
    were made alone. Returns the scale of the decoded pixels (1.0 when not drafted); draft is a
    no-op for formats other than JPEG.
    """
    factor = min(_draft_factor(plan, header) for plan in plans)
    if factor == 1:
        return 1.0
    width, height = header.stored_size
    drafted = source.draft(None, (width // factor, height // factor))
    if drafted is None:
        return 1.0
    _, box = drafted
    return box[2] / width


def _draft_factor(plan: Plan, header: ImageHeader) -> int:
    """How far (8, 4, 2 or 1) a JPEG could be DCT-scaled for `plan` alone: as far as its
    leading resize allows, 1 without one."""
    leading = [step for step in plan.operations[:2] if step.name != "orient"]
    first = leading[0].params if leading else None
    if not isinstance(first, operations_pb2.Resize):
        return 1
    reduction = resize.plan(first, source_size(header, plan.auto_orient)).reduction
    return next((f for f in (8, 4, 2) if reduction >= f), 1)


def _reduction(frames: _Frames, plan: Plan, header: ImageHeader) -> int:
    """The box reduction (2, 4; 1: none) that brings a rendition's branch to the scale its own
    draft would have decoded at.

    The source was DCT-scaled only as far as the largest rendition allows; a smaller one would
    otherwise be resized from more pixels than it gets when made alone (sharper, and 2-5% more
    bytes at 800 and 400 px from a 12 MP photo). A box reduction by the remaining power of two
    stands for the rest of the DCT scaling (both are low-pass filters on the same grid), and
    leaves the resize fewer pixels to filter.
    """
    if frames.scale == 1.0 or len(frames.images) != 1:
        return 1
    return max(1, round(_draft_factor(plan, header) * frames.scale))


def _reduce(frames: _Frames, k: int) -> None:
    img = frames.images[0]
    reduced = img.reduce(k)
    frames.scale *= reduced.width / img.width
    frames.images = [reduced]


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


def _frames(source: Image.Image, count: int) -> tuple[list[Image.Image], list[int], int | None]:
    """Every frame of an animation as displayed (Pillow composites each one), with its
    duration in milliseconds, and the loop count (None: play once)."""
    frames, durations = [], []
    for index in range(count):
        source.seek(index)
        source.load()
        frames.append(source.copy())
        durations.append(int(source.info.get("duration", 0)))
    loop = source.info.get("loop")
    return frames, durations, None if loop is None else int(loop)


def _orient(frames: list[Image.Image], header: ImageHeader) -> list[Image.Image]:
    """Apply the EXIF orientation (in place on a still source, whose TIFF tags hold it)."""
    if len(frames) == 1:
        try:
            ImageOps.exif_transpose(frames[0], in_place=True)
        except Exception as exc:  # malformed EXIF is common and never worth failing a job for
            log.info("ignoring unreadable EXIF orientation: %r", exc)
        return frames
    method = _ORIENTATIONS.get(header.orientation)
    return frames if method is None else [f.transpose(method) for f in frames]


_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _copyright(source: Image.Image) -> bytes | None:
    try:
        return copyright_exif(source.getexif())
    except Exception as exc:  # malformed EXIF: there is no copyright to keep
        log.info("ignoring unreadable EXIF: %r", exc)
        return None


def _normalize_all(frames: list[Image.Image]) -> list[Image.Image]:
    """normalize_mode for every frame, then one mode for all (frames of a GIF differ)."""
    frames = [normalize_mode(f) for f in frames]
    modes = {f.mode for f in frames}
    if len(modes) == 1:
        return frames
    alpha = any(m in ("LA", "RGBA") for m in modes)
    colour = any(m in ("RGB", "RGBA") for m in modes)
    mode = ("RGBA" if alpha else "RGB") if colour else ("LA" if alpha else "L")
    return [f.convert(mode) for f in frames]


def strip(img: Image.Image) -> Image.Image:
    """Drop all metadata: what outputs keep (ICC profile, copyright) goes to the encoder
    explicitly."""
    if isinstance(img, ImageFile.ImageFile):
        # Still the decoded file: encoders copy some tags straight from it (TIFF keeps XMP and
        # IPTC), so hand them a plain image over the same pixels (colour.same_pixels).
        img = same_pixels(img)
    img.info = {}
    return img
