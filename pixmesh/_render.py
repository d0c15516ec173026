"""Text the CLI shows: the live progress line, tables and output file names."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Iterator
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from pixmesh import ops
from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.job_pb2 import Job, JobError, Output, Stage
from pixmesh.gateway.v1.gateway_pb2 import ListOperationsResponse

# Extensions people expect, where the format name is not one.
_EXTENSIONS = {image_pb2.JPEG: "jpg", image_pb2.HEIF: "heic"}


def to_json(message: Message) -> str:
    # The same JSON as the REST API through Envoy (lowerCamelCase field names).
    return json_format.MessageToJson(message, indent=2)


def extension(output: Output) -> str:
    if output.format != image_pb2.IMAGE_FORMAT_UNSPECIFIED:
        return _EXTENSIONS.get(output.format, image_pb2.ImageFormat.Name(output.format).lower())
    guessed = mimetypes.guess_extension(output.content_type) if output.content_type else None
    return guessed.lstrip(".") if guessed else "bin"


def output_name(stem: str, output: Output, count: int) -> str:
    """<stem>-<rendition>.<ext> for a rendition's output; otherwise <stem>.<ext> for a single
    output, <stem>-<index>.<ext> when there are several."""
    if output.rendition:
        suffix = f"-{output.rendition}"
    else:
        suffix = "" if count == 1 else f"-{output.index}"
    return f"{stem}{suffix}.{extension(output)}"


def error_text(error: JobError) -> str:
    return f"{error.reason or error.code}: {error.message}" if error.message else error.reason


def progress_line(job: Job) -> str:
    """e.g. "job_1f… RUNNING stage 2/3 inference [imaging done, inference running] 50%"."""
    parts = [job.job_id, Job.State.Name(job.state)]
    stages = list(job.stages)
    if stages:
        position = next((i for i, s in enumerate(stages) if s.state != Stage.SUCCEEDED), None)
        current = stages[position if position is not None else -1]
        number = position + 1 if position is not None else len(stages)
        parts.append(f"stage {number}/{len(stages)} {current.service}")
        parts.append("[" + ", ".join(_stage_text(s) for s in stages) + "]")
    parts.append(f"{job.progress * 100:.0f}%")
    if job.HasField("error"):
        parts.append(error_text(job.error))
    return " ".join(parts)


def _stage_text(stage: Stage) -> str:
    text = f"{stage.service} {Stage.State.Name(stage.state).lower()}"
    return text + (f" (attempt {stage.attempts})" if stage.attempts > 1 else "")


class Progress:
    """One line rewritten in place on a terminal; a plain line per change otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = ""

    def update(self, job: Job) -> None:
        line = progress_line(job)
        if line == self._last:
            return
        self._last = line
        if self._tty:
            self._stream.write("\r\x1b[K" + line)  # carriage return + clear to end of line
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._tty and self._last:
            self._stream.write("\n")
            self._stream.flush()


def jobs_table(jobs: Iterable[Job]) -> Iterator[str]:
    yield f"{'JOB':<36}  {'STATE':<9}  {'DONE':>4}  {'CREATED':<20}  OPERATIONS"
    for job in jobs:
        created = (
            job.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            if job.created_at.seconds
            else ""
        )
        pipeline = ", ".join(ops.describe(op) for op in job.operations)
        if job.renditions:
            names = ", ".join(r.name for r in job.renditions)
            pipeline = f"{pipeline}; renditions: {names}" if pipeline else f"renditions: {names}"
        state = Job.State.Name(job.state)
        yield f"{job.job_id:<36}  {state:<9}  {job.progress * 100:>3.0f}%  {created:<20}  {pipeline}"


def operations_table(resp: ListOperationsResponse) -> Iterator[str]:
    for info in resp.operations:
        status = "" if info.available else f"  [unavailable: {info.unavailable_reason}]"
        yield f"{info.name} ({info.service}){status}"
        if info.description:
            yield f"    {info.description}"
        for param in info.parameters:
            constraint = f", {param.constraint}" if param.constraint else ""
            yield f"    - {param.name} ({param.type}{constraint}): {param.description}"
    limits = resp.limits
    yield (
        f"limits: {limits.max_input_bytes} bytes, {limits.max_pixels} pixels, "
        f"{limits.max_frames} frames, {limits.max_output_dimension} px per side, "
        f"{limits.max_operations} operations, {limits.max_renditions} renditions"
    )
    yield "input formats: " + _formats(resp.input_formats)
    yield "output formats: " + _formats(resp.output_formats)


def _formats(values: Iterable[image_pb2.ImageFormat.ValueType]) -> str:
    return ", ".join(image_pb2.ImageFormat.Name(v).lower() for v in values)
