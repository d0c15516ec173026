"""Text the CLI shows: the live progress line, tables and output file names."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable, Iterator
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from pixmesh import ops
from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.fleet_pb2 import FleetStatus, QueueStatus
from pixmesh.common.v1.job_pb2 import Job, JobError, Output, Stage
from pixmesh.gateway.v1.gateway_pb2 import ListOperationsResponse

# Extensions people expect, where the format name is not one.
_EXTENSIONS = {image_pb2.JPEG: "jpg", image_pb2.HEIF: "heic"}


def to_json(message: Message, indent: int | None = 2) -> str:
    # The field names of the REST API through Envoy: snake_case, as in the protos (the
    # transcoder's preserve_proto_field_names, deploy/envoy/config.py). indent=None: one line.
    return json_format.MessageToJson(message, indent=indent, preserving_proto_field_name=True)


def print_listing(message: Message, as_json: bool, table: Iterable[str]) -> int:
    """A listing command's output: the response as REST JSON (--json), else its table's lines
    (a generator, so only the chosen form is built). The exit status, 0."""
    if as_json:
        print(to_json(message))
    else:
        for line in table:
            print(line)
    return 0


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


def age_text(seconds: float) -> str:
    """e.g. 0.4s, 12s, 4m05s, 2h03m, 3d04h."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


_FLEET_COLUMNS = (
    ("SERVICE", "<", 10),
    ("REPLICAS", ">", 8),
    ("QUEUE", "<", 22),  # fits <service>-batch-tasks
    ("PENDING", ">", 7),
    ("ACK-PENDING", ">", 11),
    ("OLDEST", ">", 7),
    ("REDELIVERED", ">", 11),
    ("DLQ", ">", 5),
)


def _row(*cells: object) -> str:
    return "  ".join(
        f"{cell!s:{align}{width}}"
        for cell, (_, align, width) in zip(cells, _FLEET_COLUMNS, strict=True)
    ).rstrip()


def _queue_cells(queue: QueueStatus | None) -> tuple[object, ...]:
    if queue is None:
        return ("-", "-", "-", "-", "-")
    oldest = (
        age_text(queue.oldest_age.ToNanoseconds() / 1e9) if queue.HasField("oldest_age") else "-"
    )
    return (queue.consumer, queue.pending, queue.ack_pending, oldest, queue.redelivered)


def fleet_table(status: FleetStatus) -> Iterator[str]:
    """One row per service (its first queue beside it, any other below), then jobs/s and what
    needs a look: services without replicas, queues nobody fetches from, unreadable parts."""
    yield _row(*(name for name, _, _ in _FLEET_COLUMNS))
    notes: list[str] = []
    for svc in status.services:
        queues = list(svc.queues)
        yield _row(
            svc.service,
            svc.replicas,
            *_queue_cells(queues[0] if queues else None),
            svc.dead_letters,
        )
        for queue in queues[1:]:
            yield _row("", "", *_queue_cells(queue), "")
        if not svc.replicas:
            notes.append(f"no replica of {svc.service} is running")
        notes += [
            f"{q.consumer}: {q.pending} pending and no worker fetching"
            for q in queues
            if q.pending and not q.waiting and not q.ack_pending
        ]
    if status.HasField("jobs"):
        jobs = status.jobs
        window = jobs.window.ToNanoseconds() / 1e9
        failed = f" ({jobs.failed} failed)" if jobs.failed else ""
        yield ""
        yield (
            f"jobs/s over the last {window:.0f}s: {jobs.created_per_second:.2f} created, "
            f"{jobs.finished_per_second:.2f} finished{failed}; "
            f"running {jobs.running}, pending {jobs.pending}"
        )
    for note in [*notes, *status.warnings]:
        yield f"warning: {note}"
