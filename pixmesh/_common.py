"""What the clients use besides their own methods: settings, channel options, the retry policy,
upload sources and deadlines. Nothing here talks to a channel. (AsyncClient is written once, in
pixmesh/aio.py; the synchronous Client in pixmesh/client.py is generated from it.)

What is retried, and how:
- Unary RPCs (CreateJob, GetJob, ListJobs, CancelJob, DownloadOutput, ListOperations, the
  metadata queries, the presigned-URL calls and GetFleetStatus) are retried by gRPC itself on UNAVAILABLE, from the `retryPolicy` in the channel's service config:
  exponential backoff with full jitter, bounded attempts, all within the call's one deadline.
  CreateJob is safe to retry because the clients always send an idempotency key.
- UploadImage is client-streaming: gRPC stops retrying once it has sent more than its retry buffer
  (256 KiB), which the first 1 MiB chunk exceeds. The clients retry it themselves, on UNAVAILABLE
  only, when the source can be read again (bytes, a path, a seekable file).
- WatchJob is server-streaming and may break after some updates; the clients re-open it on
  UNAVAILABLE (or an early clean end) and skip the repeated current state.
- GetImageMetadata right after an upload is UNAVAILABLE (METADATA_PENDING) until the image has
  been read; get_image_metadata asks again every METADATA_POLL_S within its deadline.
Nothing else is retried: other codes are the caller's problem or need a decision.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import BinaryIO, TypedDict
from uuid import uuid4

from google.protobuf.message import Message

from pixmesh import errors, ops
from pixmesh.common.v1.job_pb2 import Job
from pixmesh.common.v1.operations_pb2 import Operation, Rendition
from pixmesh.gateway.v1 import gateway_pb2

DEFAULT_TARGET = "127.0.0.1:8080"
API_KEY_ENV = "PIXMESH_API_KEY"
API_KEY_FILE = Path(".pixmesh") / "api-key"
SERVICE = "pixmesh.gateway.v1.GatewayService"
CHUNK_SIZE = 1 << 20
# gRPC caps maxAttempts at 5, so at most 4 retries can be configured.
MAX_RETRIES = 4
INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0
BACKOFF_MULTIPLIER = 2.0
# DownloadOutput returns a whole image in one message; gRPC's 4 MiB default is too small.
MAX_RECEIVE_BYTES = 256 << 20
# Unary methods: safe for gRPC's transparent retry (CreateJob thanks to its idempotency key).
RETRIED_METHODS = (
    "CreateJob",
    "GetJob",
    "ListJobs",
    "CancelJob",
    "DownloadOutput",
    "ListOperations",
    "PlanJob",
    "GetImageMetadata",
    "SearchImages",
    "FindSimilar",
    # A retried CreateUploadUrl leaves an unused URL that expires; RegisterUpload returns the
    # same image when asked twice; GetOutputUrl only signs.
    "CreateUploadUrl",
    "RegisterUpload",
    "GetOutputUrl",
    # Reads only.
    "GetFleetStatus",
)
# GetImageMetadata answers UNAVAILABLE with this reason until a new upload has been read.
METADATA_PENDING = "METADATA_PENDING"
# Seconds between asks while it is pending (extraction takes a fraction of a second).
METADATA_POLL_S = 0.2
TERMINAL_STATES = frozenset({Job.SUCCEEDED, Job.FAILED, Job.CANCELLED})

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def _version() -> str:
    try:
        return importlib_metadata.version("pixmesh")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


VERSION = _version()


def resolve_api_key(explicit: str | None) -> str | None:
    """The explicit key, else $PIXMESH_API_KEY, else ./.pixmesh/api-key (written by `make up`)."""
    if explicit:
        return explicit
    if env := os.environ.get(API_KEY_ENV, "").strip():
        return env
    try:
        return API_KEY_FILE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Settings:
    target: str
    api_key: str | None
    timeout: float
    retries: int
    watch_timeout: float

    @classmethod
    def resolve(
        cls,
        target: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        watch_timeout: float,
    ) -> Settings:
        if timeout <= 0 or watch_timeout <= 0:
            raise ValueError("timeouts must be positive: every call carries a deadline")
        if not 0 <= retries <= MAX_RETRIES:
            raise ValueError(f"retries must be within 0..{MAX_RETRIES} (gRPC caps attempts at 5)")
        return cls(target, resolve_api_key(api_key), timeout, retries, watch_timeout)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        # Without a key the gateway answers UNAUTHENTICATED, which says more than a client error.
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def channel_options(self) -> list[tuple[str, str | int]]:
        return [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", service_config(self.retries)),
            # Our retry policy must not be replaced by one published in DNS.
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.primary_user_agent", f"pixmesh-python/{VERSION}"),
        ]


def service_config(retries: int) -> str:
    """The channel's service config: a retryPolicy on UNAVAILABLE for the unary methods."""
    method_config: dict[str, object] = {
        "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS],
    }
    if retries:
        # gRPC waits random(0, min(initial * multiplier**n, max)) before retry n+1 (full jitter).
        method_config["retryPolicy"] = {
            "maxAttempts": retries + 1,
            "initialBackoff": f"{INITIAL_BACKOFF_S}s",
            "maxBackoff": f"{MAX_BACKOFF_S}s",
            "backoffMultiplier": BACKOFF_MULTIPLIER,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    return json.dumps({"methodConfig": [method_config]})


class Deadline:
    """One deadline shared by every attempt of an operation the client retries by hand."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def timeout(self) -> float:
        """Seconds left for the next call; raises DeadlineExceeded once none are."""
        left = self.left()
        if left <= 0:
            raise errors.DeadlineExceeded(f"gave up after {self.seconds:g}s")
        return left


def retry_delay(
    error: errors.PixmeshError, attempt: int, retries: int, deadline: Deadline
) -> float | None:
    """Seconds to wait before retrying `error` by hand, or None to give up (the same policy as
    the service config: UNAVAILABLE only, full jitter, bounded, within the deadline)."""
    if not isinstance(error, errors.Unavailable) or attempt >= retries:
        return None
    delay = random.uniform(0, min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * BACKOFF_MULTIPLIER**attempt))
    return delay if delay < deadline.left() else None


def outage_delay(error: errors.PixmeshError, request: Message, deadline: Deadline) -> float | None:
    """Seconds to wait before calling again after the channel's own retries gave up, or None.

    Only for an UNAVAILABLE that carries the server's RetryInfo (a dependency such as Postgres is
    down: DEPENDENCY_UNAVAILABLE) on a method that is safe to repeat (RETRIED_METHODS): the call
    is repeated, at the server's pace, for as long as its deadline allows, so a client rides out
    a dependency restart instead of failing after the channel's ~1.5 s of quick retries."""
    method = request.DESCRIPTOR.name.removesuffix("Request")
    if not isinstance(error, errors.Unavailable) or error.retry_delay is None:
        return None
    if method not in RETRIED_METHODS:
        return None
    delay = max(error.retry_delay, random.uniform(0, INITIAL_BACKOFF_S))
    return delay if delay < deadline.left() else None


class SearchFilters(TypedDict, total=False):
    """Keyword filters of search_images: the fields of gateway.v1.SearchImagesRequest."""

    camera_make: str
    camera_model: str
    taken_after: datetime
    taken_before: datetime
    min_latitude: float
    max_latitude: float
    min_longitude: float
    max_longitude: float
    min_width: int
    max_width: int
    min_height: int
    max_height: int
    formats: list[str | int]


def search_request(page_size: int, filters: SearchFilters) -> gateway_pb2.SearchImagesRequest:
    if not 1 <= page_size <= 100:
        raise ValueError("page_size must be within 1..100")
    # Protobuf takes datetimes for Timestamp fields and enum names ("JPEG") for enums.
    return gateway_pb2.SearchImagesRequest(page_size=page_size, **filters)  # type: ignore[arg-type]


def is_pending(error: errors.PixmeshError, deadline: Deadline) -> bool:
    """Whether to ask for an image's metadata again (it is being extracted, time is left)."""
    return error.reason == METADATA_PENDING and deadline.left() > METADATA_POLL_S


def job_pipeline(
    operations: Iterable[ops.OperationLike], preset: str, renditions: ops.RenditionsLike | None
) -> tuple[list[Operation], list[Rendition]]:
    """The operations and renditions of a CreateJob/PlanJob, checked before any call: a job
    needs operations, a preset or renditions."""
    pipeline = ops.coerce(operations, allow_empty=True)
    branches = ops.coerce_renditions(renditions)
    if not (pipeline or preset or branches):
        raise ValueError("a job needs operations, a preset or renditions")
    return pipeline, branches


def rendition_index(job: Job, rendition: str) -> int:
    """The index of the output a rendition produced, from the job's outputs."""
    for output in job.outputs:
        if output.rendition == rendition:
            return output.index
    names = ", ".join(repr(o.rendition) for o in job.outputs if o.rendition) or "none"
    raise errors.OutputNotFound(
        f"job {job.job_id} has no output of rendition {rendition!r} (outputs: {names})",
        reason="OUTPUT_NOT_FOUND",
    )


def new_idempotency_key() -> str:
    return uuid4().hex


def is_terminal(job: Job) -> bool:
    return job.state in TERMINAL_STATES


def job_state(state: int | str | None) -> Job.State.ValueType:
    """Accept Job.SUCCEEDED, "succeeded" or None (all states)."""
    if state is None:
        return Job.STATE_UNSPECIFIED
    if isinstance(state, str):
        try:
            return Job.State.Value(state.upper())
        except ValueError:
            names = ", ".join(n.lower() for n in Job.State.keys()[1:])
            raise ValueError(f"unknown job state {state!r}; expected one of: {names}") from None
    return Job.State.ValueType(state)


def utf8_text(name: str) -> str:
    """`name` as protobuf can send it: a POSIX file name's bytes that are not UTF-8 (kept by
    Python as surrogates) become U+FFFD, a lone surrogate "?"."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


class UploadSource:
    """Bytes, a path or a binary file object, readable again when a retry needs it."""

    def __init__(self, source: Source, filename: str | None = None) -> None:
        self._memory: bytes | bytearray | memoryview | None = None
        self._path: Path | None = None
        self._file: BinaryIO | None = None
        self._start: int | None = None
        default_name = ""
        if isinstance(source, bytes | bytearray | memoryview):
            self._memory = source
        elif isinstance(source, str | os.PathLike):
            self._path = Path(source)
            default_name = self._path.name
        else:
            if isinstance(source, io.TextIOBase):
                raise TypeError("open the file in binary mode ('rb') to upload it")
            self._file = source
            self._start = source.tell() if source.seekable() else None
            name = getattr(source, "name", None)
            default_name = Path(name).name if isinstance(name, str) else ""
        self.filename = utf8_text(default_name if filename is None else filename)
        guessed = mimetypes.guess_type(self.filename)[0] if self.filename else None
        self.content_type = guessed or ""  # informational only: the gateway sniffs the bytes

    @property
    def replayable(self) -> bool:
        return self._file is None or self._start is not None

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """A reader at the start of the data; the caller's own file object is left open."""
        if self._memory is not None:
            yield io.BytesIO(self._memory)
        elif self._path is not None:
            with self._path.open("rb") as file:
                yield file
        else:
            assert self._file is not None
            if self._start is not None:
                self._file.seek(self._start)
            yield self._file

    def info_request(self) -> gateway_pb2.UploadImageRequest:
        info = gateway_pb2.UploadInfo(filename=self.filename, content_type=self.content_type)
        return gateway_pb2.UploadImageRequest(info=info)

    def requests(self, reader: BinaryIO) -> Iterator[gateway_pb2.UploadImageRequest]:
        """The info message, then the data in chunks of at most CHUNK_SIZE bytes."""
        yield self.info_request()
        while chunk := reader.read(CHUNK_SIZE):
            yield gateway_pb2.UploadImageRequest(chunk=chunk)


def write_atomically(path: Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary name, so a crash or a full disk cannot leave a
    truncated image under the final name."""
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
    return path
