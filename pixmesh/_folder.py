"""A folder through the mesh: `AsyncClient.process_folder` / `Client.process_folder` and what
`pixmesh batch DIR -o DEST` runs.

The server checks the pipeline first (`check_pipeline`, before the first upload), so a refused
one (a parameter over the deployment's limits, an unknown preset) ends the run with nothing
uploaded. Files are taken by content, not extension (JPEG, PNG, WebP, AVIF, HEIC, TIFF, GIF, BMP,
ICO by their magic bytes: `pixmesh.formats.sniff`, the gateway's own rule), uploaded a few at a time and grouped into server-side batches of `chunk`
images, whose jobs the jobs service creates at the pace the workers take them (so the client never meets
QUEUE_FULL and interactive users keep their lane). Each batch is followed to its end, its outputs
downloaded into DEST under the source's relative path with the new extension (renditions:
"<path without extension>/<rendition>.<ext>"); where two sources differ only by their extension
(photo.jpg, photo.png), each keeps it (photo.jpg.webp, photo.png.webp) rather than one
overwriting the other.

Outputs come straight from object storage, through the presigned GET URLs the batch's listing
carries (ListBatchJobs output_urls): a download through the gateway cost the gateway, the jobs
service, Envoy and the client a request and the bytes through botocore and gRPC (BENCHMARKS.md,
"The batch's bytes off the gateway"). Where storage cannot be reached from here (the URL's host
refuses, does not answer, or answers with an error), that output and every later one of the run
are downloaded through the gateway (DownloadOutput) instead: no image fails for it. Either way
the bytes are checked against the output's size and sha256 (a mismatch fails the image,
OUTPUT_MISMATCH, and nothing is written under its name). Uploads go through the gateway's
UploadImage: a presigned PUT costs more in all (its registration reads the object back and
stores it again; same section).

Bounded on the client: at most `concurrency` files read and uploaded at once, at most
`concurrency` downloads, at most two batches in flight, and nothing kept of a finished image but
its line in the journal. Resume: DEST/.pixmesh-batch.jsonl records each finished source by its
SHA-256 (and its outputs); a run skips a file whose content is recorded and whose outputs are
there, so a re-run after Ctrl-C, a crash or a reboot does only the rest, and a renamed or moved
file is not redone. Stopping (`stop` set, e.g. by Ctrl-C in the CLI) takes no new file, finishes
what is in flight and still writes the summary. DEST/summary.json says what the run did.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixmesh import _presigned, errors, ops, summaries
from pixmesh._common import job_pipeline, utf8_text, write_atomically
from pixmesh._render import extension
from pixmesh.common.v1.batch_pb2 import BatchFailureGroup, BatchItem, BatchSummary
from pixmesh.common.v1.job_pb2 import Job, Output
from pixmesh.common.v1.operations_pb2 import Operation, Rendition
from pixmesh.formats import HEAD_BYTES, sniff

if TYPE_CHECKING:
    from pixmesh.aio import AsyncClient

log = logging.getLogger(__name__)

JOURNAL = ".pixmesh-batch.jsonl"
SUMMARY = "summary.json"
# Batches of the client in flight at once (each holds `chunk` images).
# Images per server batch: CreateBatch takes 1..10000 image ids (ImageIdList in batch.proto).
MAX_CHUNK = 10_000
BATCHES_IN_FLIGHT = 2
# The pause before a batch's progress stream is opened again after it was cut.
POLL_S = 0.25
# A batch's jobs are listed (to download what ended) once this many more of them ended than
# were handled, or this long after the last listing with any ended since: not on every
# progress message (about one a second), where the listings cost the gateway, the jobs service
# and Envoy ~7 ms of CPU per image (BENCHMARKS.md, "The gateway per batch image"). Each listing
# (every item of the batch, with its outputs' signed URLs) costs ~20 ms of CPU in all: at 8 and
# 5 s a 32-image batch running ~30 s (two in flight share the workers) was listed ~10 times;
# at 16 and 15 s ~3 (BENCHMARKS.md, "The storage requests, the CLI and the child").
COLLECT_AT = 16
COLLECT_S = 15.0
_ENDED = (Job.SUCCEEDED, Job.FAILED, Job.CANCELLED)


def walk(root: Path, skip: Path | None = None) -> Iterator[Path]:
    """Files under `root`, recursively, in a stable order (`skip`: a folder left out, DEST)."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        for name in sorted(filenames):
            if not name.startswith("."):
                yield here / name


@dataclass
class FolderSummary:
    """What a run did; `to_proto` gives the BatchSummary that DEST/summary.json holds, in the
    format of the server's summary.json (pixmesh.summaries)."""

    source: str
    destination: str
    images: int = 0
    succeeded: int = 0
    failed: int = 0
    # Already done by an earlier run (same content, outputs present).
    skipped: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    # Uploaded bytes (succeeded and failed images), and those of the succeeded ones.
    bytes_in: int = 0
    succeeded_bytes_in: int = 0
    bytes_out: int = 0
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    seconds: list[float] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)
    interrupted: bool = False

    def fail(self, name: str, reason: str, message: str, job_id: str = "") -> None:
        self.failed += 1
        # A file name that is not UTF-8 as the summary's JSON can hold it (the upload's name).
        name = utf8_text(name)
        self.failures.append({"name": name, "reason": reason, "message": message, "job_id": job_id})

    def to_proto(self) -> BatchSummary:
        finished = self.finished or time.time()
        s = BatchSummary(
            images=self.images,
            succeeded=self.succeeded,
            failed=self.failed,
            skipped=self.skipped,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            wall_seconds=max(finished - self.started, 1e-9),
            interrupted=self.interrupted,
            source=self.source,
            destination=self.destination,
            batch_ids=self.batch_ids,
            client_peak_rss_megabytes=_peak_rss_mb(),
        )
        summaries.derive(s, self.succeeded_bytes_in)
        summaries.per_image(s, self.seconds)
        s.started_at.FromNanoseconds(int(self.started * 1e9))
        s.finished_at.FromNanoseconds(int(finished * 1e9))
        groups: dict[str, BatchFailureGroup] = {}
        for f in sorted(self.failures, key=lambda f: (f["reason"], f["name"])):
            g = groups.setdefault(f["reason"], BatchFailureGroup(reason=f["reason"]))
            g.count += 1
            g.failures.add(name=f["name"], message=f["message"], job_id=f.get("job_id", ""))
        s.failures.extend(groups.values())
        return s

    def to_json(self) -> dict[str, Any]:
        """The summary document as a dict (what DEST/summary.json holds)."""
        return summaries.summary_dict(self.to_proto())


def _peak_rss_mb() -> float:
    """This process's peak resident memory, MB (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return float(peak if sys.platform == "darwin" else peak * 1024) / 1e6


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    bytes_in: int = 0


@dataclass
class _Item:
    rel: str
    sha256: str
    size: int
    started: float
    image_id: str = ""


class _Journal:
    """DEST/.pixmesh-batch.jsonl: one line per finished source (sha256, its name, its outputs).
    A file is done when its content is recorded under its name with the outputs there, or under
    a name no longer in the source folder (the file was moved or renamed since). Two files with
    the same bytes at two names are two files: each gets its outputs."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / JOURNAL
        self.done: dict[str, dict[str, list[str]]] = {}  # sha256 -> name -> outputs
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                # "" for a line without its name (written before names were kept).
                names = self.done.setdefault(entry["sha256"], {})
                names[entry.get("name", "")] = entry["outputs"]
        self._file = self.path.open("a", encoding="utf-8")

    def finished(self, sha256: str, name: str, dest: Path, source: Path) -> bool:
        def there(outputs: list[str]) -> bool:
            return all((dest / o).exists() for o in outputs)

        names = self.done.get(sha256, {})
        if name in names:
            return there(names[name])
        return any(
            there(outputs) and (not other or not (source / other).exists())
            for other, outputs in names.items()
        )

    def record(self, sha256: str, name: str, outputs: list[str]) -> None:
        self.done.setdefault(sha256, {})[name] = outputs
        line = {"sha256": sha256, "name": name, "outputs": outputs}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _Unreadable(Exception):
    """A file of the folder that cannot be read: its failure's reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _read(path: Path, limit: int) -> tuple[bytes, str]:
    try:
        # Non-blocking: opening a FIFO would otherwise wait for a writer forever (it is refused
        # below); reads of a regular file are not affected.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        # A dangling or looping symlink, a file removed since the walk, one we may not read.
        reason = "PERMISSION_DENIED" if exc.errno in (errno.EACCES, errno.EPERM) else "NOT_FOUND"
        raise _Unreadable(reason, f"cannot open the file: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise _Unreadable("UNSUPPORTED_FORMAT", "not a regular file (a FIFO, socket or device)")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise _Unreadable(
                "STORAGE_ERROR", f"cannot read the file: {exc.strerror or exc}"
            ) from exc
    return data, hashlib.sha256(data).hexdigest()


async def check_pipeline(
    client: AsyncClient,
    pipeline: list[Operation],
    preset: str,
    renditions: list[Rendition],
) -> None:
    """Raise the server's refusal of the pipeline (an unknown preset, a parameter over the
    deployment's limits) before any file is uploaded for it. CreateBatch checks the pipeline
    before its images (services/gateway/batches.py), so a request with no image is refused for
    the missing images alone when the pipeline passes, and creates nothing."""
    try:
        await client.create_batch([], pipeline, preset=preset, renditions=renditions)
    except errors.InvalidArgument as exc:
        if [v.field for v in exc.violations] != ["source.images.image_ids"]:
            raise


async def process_folder(
    client: AsyncClient,
    source: Path,
    destination: Path,
    operations: Iterable[ops.OperationLike] = (),
    *,
    preset: str = "",
    renditions: ops.RenditionsLike | None = None,
    concurrency: int = 4,
    chunk: int = 32,
    max_bytes: int = 50 * 1024 * 1024,
    on_progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
) -> FolderSummary:
    pipeline, branches = job_pipeline(operations, preset, renditions)
    # 0 files at a time took none and ended "0 of 0" (exit 0); a chunk of 0 or over the
    # server's images per batch was refused by CreateBatch only after the uploads.
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be 1..{MAX_CHUNK} images per batch, not {chunk}")
    if not source.is_dir():
        raise ValueError(f"{source} is not a folder")
    if destination.resolve() == source.resolve():
        # Outputs beside their sources overwrite a source of the output's format (x.webp to
        # WebP is x.webp) and are taken as sources by the next run.
        raise ValueError(
            f"the destination {destination} is the source folder: choose another one (a "
            "folder inside it is fine)"
        )
    files = list(walk(source, skip=destination.resolve()))
    if not files:
        # As a server batch refuses an empty prefix (SOURCE_EMPTY): most likely a wrong path,
        # not a run that succeeded with nothing to do.
        raise ValueError(
            f"{source} holds no file to process (hidden files and folders are skipped)"
        )
    destination.mkdir(parents=True, exist_ok=True)
    summary = FolderSummary(str(source), str(destination))
    stems = Counter(os.path.splitext(p.relative_to(source).as_posix())[0] for p in files)
    progress = Progress(total=len(files))
    journal = _Journal(destination)
    reads = asyncio.Semaphore(concurrency)
    downloads = asyncio.Semaphore(concurrency)
    in_flight = asyncio.Semaphore(BATCHES_IN_FLIGHT)
    batches: set[asyncio.Task[None]] = set()
    stop = stop or asyncio.Event()
    checked = asyncio.Lock()
    check: list[BaseException | None] = []  # the server's answer, once asked
    # Whether outputs are fetched through their presigned URLs; False for the rest of the run
    # once one could not be (storage not reachable from here).
    direct = [True]

    async def pipeline_accepted() -> bool:
        """Ask the server once, before the first upload, whether it takes the pipeline: raise
        its refusal (first caller), False for the callers after a refusal."""
        async with checked:
            if not check:
                try:
                    await check_pipeline(client, pipeline, preset, branches)
                except BaseException as exc:
                    check.append(exc)
                    raise
                check.append(None)
        return check[0] is None

    def report() -> None:
        if on_progress is not None:
            on_progress(progress)

    def failed(name: str, reason: str, message: str, job_id: str = "") -> None:
        summary.fail(name, reason, message, job_id)
        progress.failed += 1
        report()

    async def take(path: Path) -> _Item | None:
        """Read, hash, sniff and upload one file; None when skipped or failed."""
        rel = path.relative_to(source).as_posix()
        async with reads:
            started = time.monotonic()
            summary.images += 1
            try:
                data, sha = await asyncio.to_thread(_read, path, max_bytes)
            except _Unreadable as exc:
                failed(rel, exc.reason, exc.message)
                return None
            if journal.finished(sha, rel, destination, source):
                summary.skipped += 1
                progress.skipped += 1
                report()
                return None
            if not data:
                failed(rel, "EMPTY_IMAGE", "zero bytes")
                return None
            if len(data) > max_bytes:
                failed(rel, "IMAGE_TOO_LARGE", f"larger than {max_bytes} bytes")
                return None
            if sniff(data[:HEAD_BYTES]) is None:
                failed(rel, "UNSUPPORTED_FORMAT", "not an image pixmesh reads (by its content)")
                return None
            if not await pipeline_accepted():
                return None  # refused: the run is ending with the refusal
            try:
                image = await client.upload(data, filename=rel)
            except errors.PixmeshError as exc:
                failed(rel, exc.reason, exc.message)
                return None
            summary.bytes_in += len(data)
            progress.bytes_in += len(data)
            return _Item(rel, sha, len(data), started, image.image_id)

    async def save(item: _Item, job_id: str, outputs: Iterable[Output]) -> list[str]:
        stem = os.path.splitext(item.rel)[0]
        if stems[stem] > 1:  # photo.jpg and photo.png: photo.jpg.webp and photo.png.webp
            stem = item.rel
        names = []
        for output in outputs:
            name = (
                f"{stem}/{output.rendition}.{extension(output)}"
                if output.rendition
                else f"{stem}.{extension(output)}"
            )
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            async with downloads:
                # Awaited first: `x += await ...` would read x before the await and lose what
                # concurrent downloads added meanwhile.
                size = await fetch(job_id, output, target)
            summary.bytes_out += size
            names.append(name)
        return names

    async def fetch(job_id: str, output: Output, target: Path) -> int:
        """One output into `target`, checked: from its presigned URL while storage can be
        reached from here, else through the gateway; the bytes written."""
        if output.download_url and direct[0]:
            try:
                return await asyncio.to_thread(
                    _presigned.download,
                    output.download_url,
                    target,
                    output.sha256,
                    output.size_bytes,
                    client.settings.timeout,
                )
            except errors.PixmeshError as exc:
                if exc.reason == _presigned.MISMATCH:
                    raise
                if direct[0]:
                    direct[0] = False
                    log.warning(
                        "object storage cannot be reached from here (%s): outputs are "
                        "downloaded through the gateway for the rest of the run",
                        exc,
                    )
        data = await client.download_output(job_id, output.index)
        _presigned.check(data, output.sha256, output.size_bytes)
        await asyncio.to_thread(write_atomically, target, data)
        return len(data)

    def succeeded(item: _Item, outputs: list[str]) -> None:
        journal.record(item.sha256, item.rel, outputs)
        summary.succeeded += 1
        summary.succeeded_bytes_in += item.size
        summary.seconds.append(time.monotonic() - item.started)
        progress.done += 1
        report()

    async def run_batch(items: list[_Item]) -> None:
        try:
            batch = await client.create_batch(
                [i.image_id for i in items],
                pipeline,
                preset=preset,
                renditions=branches,
            )
            summary.batch_ids.append(batch.batch_id)
            handled: set[int] = set()

            async def finish(entry: BatchItem) -> None:
                # A succeeded item lists its job's outputs (a server before BatchItem.outputs,
                # or a job that made none, sends none: the job is read then).
                job = None
                if entry.job_id and not (entry.state == Job.SUCCEEDED and entry.outputs):
                    job = await client.get_job(entry.job_id)
                # By its position: two files with the same bytes are one image (uploads are
                # deduplicated), but two items, each with its own name and outputs.
                item = items[entry.index]
                if (job is None and entry.outputs) or (
                    job is not None and job.state == Job.SUCCEEDED
                ):
                    outputs = entry.outputs if job is None else job.outputs
                    try:
                        names = await save(item, entry.job_id, outputs)
                    except errors.PixmeshError as exc:
                        if exc.reason != _presigned.MISMATCH:
                            raise
                        failed(item.rel, exc.reason, exc.message, entry.job_id)
                        return
                    succeeded(item, names)
                else:
                    err = job.error if job is not None else entry.error
                    state = Job.State.Name(job.state if job is not None else entry.state)
                    failed(
                        item.rel,
                        err.reason or state,
                        err.message or state.lower(),
                        entry.job_id,
                    )

            async def collect(final: bool) -> None:
                """Download what ended so far (everything left, when `final`), so downloads
                overlap the batch's processing."""
                ended = [
                    entry
                    async for entry in client.list_batch_jobs(batch.batch_id, output_urls=True)
                    if entry.index not in handled and (final or entry.state in _ENDED)
                ]
                handled.update(entry.index for entry in ended)
                await asyncio.gather(*(finish(entry) for entry in ended))

            # Followed with WatchBatch (one stream; the jobs service looks at the batch once a
            # second), and its jobs listed only when COLLECT_AT more of them ended than were
            # handled, or COLLECT_S after the last listing with some ended, or at its end:
            # polling GetBatch and listing every 0.25 s cost the jobs service, the gateway,
            # Envoy, Postgres and the CLI ~70 ms of CPU per image (BENCHMARKS.md, "Bulk").
            # A stream cut short (its deadline, a restarted gateway) is followed by
            # one GetBatch and a new stream.
            listed = time.monotonic()
            while batch.state == batch.RUNNING:
                try:
                    async for now in client.watch_batch(batch.batch_id):
                        p = now.progress
                        ended = p.succeeded + p.failed + p.cancelled - len(handled)
                        # Everything left ended: the stream ends with the batch, collected then.
                        if 0 < ended < len(items) - len(handled) and (
                            ended >= COLLECT_AT or time.monotonic() - listed >= COLLECT_S
                        ):
                            await collect(final=False)
                            listed = time.monotonic()
                except (errors.DeadlineExceeded, errors.Unavailable):
                    await asyncio.sleep(POLL_S)
                batch = await client.get_batch(batch.batch_id)
            await collect(final=True)
        finally:
            in_flight.release()

    async def flush(items: list[_Item]) -> None:
        await in_flight.acquire()
        task = asyncio.create_task(run_batch(items))
        batches.add(task)
        task.add_done_callback(batches.discard)

    pending: list[_Item] = []
    window: set[asyncio.Task[_Item | None]] = set()
    try:
        try:
            it = iter(files)
            while True:
                while not stop.is_set() and len(window) < concurrency:
                    path = next(it, None)
                    if path is None:
                        break
                    window.add(asyncio.create_task(take(path)))
                if not window:
                    break
                done, window = await asyncio.wait(window, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    item = task.result()
                    if item is not None:
                        pending.append(item)
                if len(pending) >= chunk:
                    await flush(pending[:chunk])
                    pending = pending[chunk:]
        except BaseException:
            for task in window:  # files still being read or waiting for the pipeline check
                task.cancel()
            raise
        if pending:
            await flush(pending)
        if batches:
            await asyncio.gather(*list(batches))
    finally:
        journal.close()
        # Stopped with files left for a re-run (a Ctrl-C after the last file was taken only
        # waited for the end).
        summary.interrupted = stop.is_set() and summary.images < len(files)
        summary.finished = time.time()
        doc = summaries.summary_json(summary.to_proto()) + "\n"
        await asyncio.to_thread(write_atomically, destination / SUMMARY, doc.encode())
    return summary
