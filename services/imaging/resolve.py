"""What an imaging task will produce, known before its input is read: the worker's Resolver.

The output keys of an imaging stage stand for its input, its operations and the engine: the
library versions (runtime.provenance.engine_fingerprint), every default the pipeline fills in
(WebP effort, qualities, AVIF speed, PNG level, the deployment's default format) and
PIPELINE_VERSION. With the output's possible extensions this is enough for the worker to look
the outputs up before downloading anything, and to skip the stage when they exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from pixmesh.common.v1 import operations_pb2
from pixmesh.events.v1 import events_pb2
from services.imaging.encode import (
    AVIF_SPEED,
    DEFAULT_QUALITY,
    PNG_COMPRESSION,
    choose_format,
)
from services.runtime.imageprobe import Format, ImageFormat, extension_for
from services.runtime.provenance import engine_fingerprint
from services.runtime.storage import input_key
from services.runtime.worker import Resolution, Resolver, output_operations

# Bump when a change to the pipeline's code gives other bytes for the same task (a new resampling
# filter, another colour conversion): every imaging output then gets a new key. 2: renditions
# reduced to their own draft scale.
PIPELINE_VERSION = "2"


def engine(webp_effort: int, default_format: Format | None) -> dict[str, str]:
    """The imaging engine: library versions and the defaults a task does not spell out."""
    found = dict(engine_fingerprint())
    found["pixmesh.imaging"] = PIPELINE_VERSION
    found["default.webp_effort"] = str(webp_effort)
    found["default.avif_speed"] = str(AVIF_SPEED)
    found["default.png_compression"] = str(PNG_COMPRESSION)
    found["default.format"] = ImageFormat.Name(default_format) if default_format else ""
    for fmt, quality in DEFAULT_QUALITY.items():
        found[f"default.quality.{ImageFormat.Name(fmt).lower()}"] = str(quality)
    return found


def resolver(webp_effort: int, default_format: Format | None = None) -> Resolver:
    defaults = engine(webp_effort, default_format)

    def resolve(task: events_pb2.Task) -> Resolution | None:
        # The input's format decides the output's without a Convert: known for the job's
        # source only (a later stage reads what an earlier one made).
        source = task.source.format if task.input_key == input_key(task.source.sha256) else None
        outputs = [output_operations(task, i) for i in range(len(task.renditions) or 1)]
        extensions = []
        for ops in outputs:
            formats = candidate_formats(ops, source, default_format)
            if not formats:
                return None
            extensions.append([extension_for(f) for f in formats])

        def operations(index: int, fmt: Format) -> list[operations_pb2.Operation]:
            return resolved_operations(outputs[index], fmt, webp_effort)

        return Resolution(defaults, extensions, operations)

    return resolve


def candidate_formats(
    operations: Sequence[operations_pb2.Operation],
    source: Format | None,
    default_format: Format | None,
) -> list[Format]:
    """The formats an output of `operations` may have (several when it depends on what decoding
    finds: alpha in a HEIF, an animation that keeps its format); [] when it cannot be known."""
    convert = _last_convert(operations)
    if convert is not None and convert.format:
        return [convert.format]
    formats: list[Format] = []
    if convert is None and default_format:
        formats.append(default_format)
    if not source:
        return formats if convert is None and default_format else []
    for alpha in (False, True):
        fmt = choose_format(None, source, alpha)
        if fmt not in formats:
            formats.append(fmt)
    return formats


def resolved_operations(
    operations: Sequence[operations_pb2.Operation], fmt: Format, webp_effort: int
) -> list[operations_pb2.Operation]:
    """`operations` with the encoder's defaults for `fmt` filled into the last Convert (one is
    added when there is none): the format, quality, effort, speed or compression level used."""
    ops = [operations_pb2.Operation() for _ in operations]
    for op, given in zip(ops, operations, strict=True):
        op.CopyFrom(given)
    last = next((op for op in reversed(ops) if op.WhichOneof("op") == "convert"), None)
    if last is None:
        last = operations_pb2.Operation(convert=operations_pb2.Convert())
        ops.append(last)
    convert = last.convert
    convert.format = fmt
    convert.auto = False  # an `auto` the gateway left to the input's format is decided now
    lossless = fmt == ImageFormat.WEBP and convert.lossless
    if fmt in DEFAULT_QUALITY and not convert.quality and not lossless:
        convert.quality = DEFAULT_QUALITY[fmt]
    if fmt == ImageFormat.WEBP and not convert.HasField("effort"):
        convert.effort = webp_effort
    if fmt == ImageFormat.AVIF and not convert.HasField("speed"):
        convert.speed = AVIF_SPEED
    if fmt == ImageFormat.PNG and not convert.HasField("compression_level"):
        convert.compression_level = PNG_COMPRESSION
    return ops


def _last_convert(operations: Sequence[operations_pb2.Operation]) -> operations_pb2.Convert | None:
    for op in reversed(operations):
        if op.WhichOneof("op") == "convert":
            return op.convert
    return None
