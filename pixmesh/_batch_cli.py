"""`pixmesh batch`: bulk work (issue 12).

    pixmesh batch photos/ -o out/ --op resize=1600x --op convert=webp:80
    pixmesh batch s3://bucket/photos/ --connection CONN_ID -o s3://bucket/out/
    pixmesh batch s3://bucket/photos/ --connection CONN_ID -o out/
    pixmesh batch --ids ids.txt -o out/ --op convert=webp      # uploaded images (- : stdin)
    pixmesh batch --id img_... --id img_... -o out/ --op convert=webp
    pixmesh batch status BATCH_ID [--json]
    pixmesh batch watch BATCH_ID
    pixmesh batch cancel BATCH_ID
    pixmesh batch archive BATCH_ID -o outputs.zip

A folder is read recursively and taken by content (see pixmesh._folder): a progress bar shows
images, MB/s, ETA and failures; a re-run skips what an earlier run finished (by content hash);
Ctrl-C finishes the work in flight and still writes DEST/summary.json (a second Ctrl-C stops at
once). An s3:// source is a prefix of a storage connection's bucket (`pixmesh` never sees its
credentials: the jobs service reads it); an s3:// destination writes there server-side. Image ids
(`--ids FILE`, one per line, `#` comments; `-` reads them from stdin; or `--id ID` repeated) are
images uploaded earlier. The exit
status is 1 when any image failed (each failure is listed with its reason).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pixmesh import _folder
from pixmesh._render import to_json
from pixmesh._sync_io import async_twin
from pixmesh.client import Client
from pixmesh.common.v1.batch_pb2 import Batch, BatchSummary, StorageLocation
from pixmesh.summaries import summary_json

Command = Callable[[Client, argparse.Namespace], int]
ACTIONS = ("status", "watch", "cancel", "archive")


def add_commands(
    commands: Any, common: argparse.ArgumentParser, add_pipeline: Callable[..., None]
) -> None:
    """Register `batch` on the CLI's subparsers (`add_pipeline`: the --op/--preset/--rendition
    options of `pixmesh process`)."""
    batch = commands.add_parser(
        "batch",
        parents=[common],
        help="a folder or an s3:// prefix through one pipeline (status|watch|cancel|archive ID)",
    )
    batch.add_argument(
        "source",
        nargs="?",
        default="",
        help="a folder, s3://BUCKET/PREFIX, or status|watch|cancel|archive (none with --ids/--id)",
    )
    batch.add_argument("batch_id", nargs="?", help="the batch of status|watch|cancel|archive")
    batch.add_argument("-o", "--output", help="destination folder, s3://BUCKET/PREFIX, or zip")
    add_pipeline(batch)
    batch.add_argument(
        "--connection", default="", help="the storage connection of an s3:// source/destination"
    )
    batch.add_argument(
        "--concurrency", type=int, default=4, help="files read/uploaded/downloaded at once"
    )
    batch.add_argument(
        "--chunk", type=int, default=32, help="images per server-side batch (default 32)"
    )
    batch.add_argument(
        "--ids", default="", help="a file of uploaded image ids, one per line (-: stdin)"
    )
    batch.add_argument(
        "--id", action="append", default=[], dest="image_ids", help="an uploaded image id"
    )
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")
    batch.set_defaults(command=run)


def run(client: Client, args: argparse.Namespace) -> int:
    if args.source in ACTIONS and args.batch_id:
        return _action(client, args)
    if not (args.op or args.preset or args.rendition):
        raise ValueError("give at least one --op, a --preset or a --rendition")
    if not args.output:
        raise ValueError("give the destination: -o DEST")
    if args.ids or args.image_ids:
        if args.source:
            raise ValueError("give a SOURCE or image ids (--ids/--id), not both")
        return _server_batch(client, args, image_ids(args.ids, args.image_ids))
    if not args.source:
        raise ValueError("give the source: a folder, s3://BUCKET/PREFIX, or --ids FILE")
    if args.source.startswith("s3://"):
        return _server_batch(client, args, _s3(args.source, args.connection))
    return asyncio.run(_folder_batch(client, args))


def image_ids(path: str, given: list[str]) -> list[str]:
    """The ids of `path` (one per line; blank lines and `#` comments skipped; "-": stdin) and
    `given`, in order, each once."""
    lines: list[str] = []
    if path:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    ids = list(dict.fromkeys(i for i in (*lines, *given) if i))
    if not ids:
        raise ValueError(f"no image ids in {'stdin' if path == '-' else path or '--id'}")
    return ids


def _s3(url: str, connection: str) -> StorageLocation:
    if not connection:
        raise ValueError("an s3:// location needs --connection (see the storage-connections API)")
    _, _, prefix = url.removeprefix("s3://").partition("/")
    return StorageLocation(connection_id=connection, prefix=prefix)


def _bar() -> Progress:
    # Progress on stderr; stdout is for results (the summary, --json).
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} MB/s"),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        # Redrawn ten times a second where it is seen. Elsewhere (stderr a pipe, a file, a CI
        # log, a dumb terminal) rich prints only the final line at the end, but its refresh
        # thread still rebuilt the bar ten times a second for nothing, through the whole run.
        auto_refresh=console.is_terminal and not console.is_dumb_terminal,
    )


async def _folder_batch(client: Client, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if stop.is_set():  # the second Ctrl-C: stop at once
            raise KeyboardInterrupt
        print("\nstopping: finishing the images in flight (Ctrl-C again to quit now)")
        stop.set()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    started = time.monotonic()
    with _bar() as bar:
        task = bar.add_task("images", total=None, rate="0.0", failed=0)

        def update(p: _folder.Progress) -> None:
            rate = p.bytes_in / 1e6 / max(time.monotonic() - started, 1e-6)
            bar.update(
                task,
                total=p.total,
                completed=p.done + p.failed + p.skipped,
                rate=f"{rate:.1f}",
                failed=p.failed,
            )

        async with async_twin(client) as aclient:
            summary = await _folder.process_folder(
                aclient,
                Path(args.source),
                Path(args.output),
                args.op,
                preset=args.preset,
                renditions=args.rendition,
                concurrency=args.concurrency,
                chunk=args.chunk,
                on_progress=update,
                stop=stop,
            )
    loop.remove_signal_handler(signal.SIGINT)
    return _report(summary.to_proto(), args.json)


def _report(summary: BatchSummary, as_json: bool, state: str = "") -> int:
    """Print the summary (the summary.json document with --json, else a line and each
    failure); the exit status: 130 when interrupted, 1 when anything failed or the batch did
    not succeed (`state`), else 0."""
    print(summary_json(summary) if as_json else _summary_text(summary, state))
    if summary.interrupted:
        return 130
    return 1 if summary.failed or state in ("FAILED", "CANCELLED") else 0


def _summary_text(s: BatchSummary, state: str = "") -> str:
    lines = [
        (f"{state}: " if state else "")
        + f"{s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled, "
        f"{s.skipped} skipped of {s.images} in {s.wall_seconds:.1f} s "
        f"({s.images_per_second:.2f} images/s, {s.megabytes_per_second:.2f} MB/s)"
    ]
    for group in s.failures:
        for f in group.failures:
            lines.append(f"  failed {f.name}: {group.reason} {f.message}")
    return "\n".join(lines)


def _server_batch(
    client: Client, args: argparse.Namespace, source: list[str] | StorageLocation
) -> int:
    """Uploaded images or a prefix of a connection's bucket: server-side, to an s3://
    destination or downloaded."""
    local = not args.output.startswith("s3://")
    destination = None if local else _s3(args.output, args.connection)
    batch = client.create_batch(
        source,
        args.op,
        preset=args.preset,
        renditions=args.rendition,
        destination=destination,
    )
    print(f"batch {batch.batch_id}: {batch.progress.total} images", file=sys.stderr)
    batch = _follow(client, batch)
    if batch.state == Batch.FAILED:
        print(f"batch failed: {batch.error.reason} {batch.error.message}", file=sys.stderr)
    if local:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        archive = out / f"{batch.batch_id}.zip"
        client.save_archive(archive, batch_id=batch.batch_id)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(out)
        archive.unlink()
        (out / _folder.SUMMARY).write_text(summary_json(batch.summary) + "\n")
    return _report(batch.summary, args.json, Batch.State.Name(batch.state))


def _follow(client: Client, batch: Batch) -> Batch:
    with _bar() as bar:
        task = bar.add_task("images", total=batch.progress.total, rate="0.0", failed=0)
        for update in client.watch_batch(batch.batch_id):
            p = update.progress
            bar.update(
                task,
                completed=p.succeeded + p.failed + p.cancelled,
                rate=f"{p.input_megabytes_per_second:.1f}",
                failed=p.failed,
            )
            batch = update
    return batch


def _action(client: Client, args: argparse.Namespace) -> int:
    batch_id = args.batch_id
    if args.source == "status":
        batch = client.get_batch(batch_id)
        print(to_json(batch) if args.json else _status_line(batch))
        return 0
    if args.source == "watch":
        batch = _follow(client, client.get_batch(batch_id))
        return _report(batch.summary, False, Batch.State.Name(batch.state))
    if args.source == "cancel":
        batch = client.cancel_batch(batch_id)
        print(_status_line(batch))
        return 0
    path = Path(args.output or f"{batch_id}.zip")
    client.save_archive(path, batch_id=batch_id)
    print(f"saved {path}")
    return 0


def _status_line(batch: Batch) -> str:
    p = batch.progress
    return (
        f"{batch.batch_id} {Batch.State.Name(batch.state)}: {p.total} images, "
        f"{p.queued} queued, {p.pending} pending, {p.running} running, {p.succeeded} succeeded, "
        f"{p.failed} failed, {p.cancelled} cancelled; {p.input_megabytes_per_second:.2f} MB/s"
        + (f", ETA {p.eta_seconds:.0f} s" if p.eta_seconds else "")
    )
