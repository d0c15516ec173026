"""The `pixmesh` command line, built on `pixmesh.Client`.

    pixmesh process photo.jpg --op resize=800x600 --op convert=webp -o out/
    pixmesh process photo.jpg --rendition "thumb=resize=200x200,fill;convert=webp" \
        --rendition "large=resize=1600x" -o out/
    pixmesh plan IMAGE_ID --op resize=800x --rendition "thumb=resize=200x200,fill"
    pixmesh jobs list --state running [--json]
    pixmesh download JOB_ID -i 0 -o photo.webp
    pixmesh download JOB_ID --all -o out/
    pixmesh status --watch 2
    pixmesh keys create --name ci --scopes read,write   (keys list|revoke|rotate; usage)
    pixmesh batch photos/ -o out/ --op convert=webp:80  (batch status|watch|cancel|archive ID)
    pixmesh --target api.example.com:443 --tls ops     (--ca ca.pem: trust that CA instead)

Results go to stdout, progress and errors to stderr. JSON has the REST API's field names
(snake_case); every listing command takes --json. Exit status: 0 on success, 1 when a call or
the job failed, 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from time import sleep, strftime

import grpc

from pixmesh import _batch_cli, _keys_cli, _rules_cli, errors, ops
from pixmesh._common import API_KEY_ENV, API_KEY_FILE, DEFAULT_TARGET, VERSION
from pixmesh._render import (
    Progress,
    error_text,
    fleet_table,
    jobs_table,
    operations_table,
    output_name,
    print_listing,
    progress_line,
    to_json,
)
from pixmesh.client import Client
from pixmesh.common.v1.job_pb2 import Job
from pixmesh.gateway.v1.gateway_pb2 import ListJobsResponse

TARGET_ENV = "PIXMESH_TARGET"
Command = Callable[[Client, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    if command in (_process, _plan) and not (args.op or args.preset or args.rendition):
        parser.error("give at least one --op, a --preset or a --rendition")
    try:
        credentials = _credentials(args.tls, args.ca)
        with Client(
            args.target, args.api_key, timeout=args.timeout, credentials=credentials
        ) as client:
            return command(client, args)
    except errors.PixmeshError as exc:
        reason = "" if exc.reason == exc.code.name else f" {exc.reason}"
        _fail(f"{exc.code.name}{reason}: {exc.message}")
        for violation in exc.violations:
            print(f"  - {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixmesh", description="Process images on a pixmesh deployment."
    )
    parser.add_argument("--version", action="version", version=f"pixmesh {VERSION}")
    _add_globals(parser, suppress=False)
    # The same options after the subcommand (`pixmesh jobs list --target ...`); SUPPRESS keeps
    # the subparser from overwriting a value given before it with its default.
    common = argparse.ArgumentParser(add_help=False)
    _add_globals(common, suppress=True)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    process = commands.add_parser(
        "process", parents=[common], help="upload, run a pipeline, download the outputs"
    )
    process.add_argument("file", help="image to process")
    _add_pipeline(process)
    process.add_argument("-o", "--output", default=".", help="directory for outputs (default .)")
    process.add_argument("--idempotency-key", help="reuse to make a retried command safe")
    process.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_false",
        help="compute every output even when identical work already stored it",
    )
    process.set_defaults(command=_process)

    plan = commands.add_parser(
        "plan", parents=[common], help="dry run: what a pipeline would do to an uploaded image"
    )
    plan.add_argument("image_id", help="an uploaded image (see `pixmesh upload`)")
    _add_pipeline(plan)
    plan.set_defaults(command=_plan)

    upload = commands.add_parser("upload", parents=[common], help="upload an image")
    upload.add_argument("file")
    upload.add_argument(
        "--presigned",
        action="store_true",
        help="PUT the file straight to object storage through a presigned URL, then register it",
    )
    upload.set_defaults(command=_upload)

    jobs = commands.add_parser("jobs", help="list, inspect, follow or cancel jobs")
    job_commands = jobs.add_subparsers(title="commands", required=True, metavar="COMMAND")
    listing = job_commands.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--state", choices=[s.lower() for s in Job.State.keys()[1:]])
    listing.add_argument("--limit", type=_count, default=20, help="at most N jobs (0: all)")
    listing.add_argument("--json", action="store_true", help='as JSON: {"jobs": [...]}')
    listing.set_defaults(command=_jobs_list)
    for name, handler, text in (
        ("get", _jobs_get, "print a job as JSON"),
        ("watch", _jobs_watch, "follow a job until it finishes"),
        ("cancel", _jobs_cancel, "cancel a job"),
    ):
        sub = job_commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("job_id")
        sub.set_defaults(command=handler)

    download = commands.add_parser("download", parents=[common], help="download outputs")
    download.add_argument("job_id")
    which = download.add_mutually_exclusive_group()
    which.add_argument("-i", "--index", type=int, default=0, help="output index (default 0)")
    which.add_argument("-r", "--rendition", help="the output of this rendition")
    which.add_argument(
        "--all", action="store_true", help="every output, into the directory -o (default .)"
    )
    download.add_argument("-o", "--output", help="file to write, - for stdout (with --all: a dir)")
    download.set_defaults(command=_download)

    operations = commands.add_parser("ops", parents=[common], help="list supported operations")
    operations.add_argument("--json", action="store_true", help="the ListOperationsResponse")
    operations.set_defaults(command=_ops)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="the deployment: replicas, queues, dead letters and jobs/s per service",
    )
    status.add_argument(
        "--json", action="store_true", help="the FleetStatus as JSON (one line per refresh)"
    )
    status.add_argument(
        "--watch", type=_positive, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    status.set_defaults(command=_status)
    _keys_cli.add_commands(commands, common)
    _rules_cli.add_commands(commands, common)
    _batch_cli.add_commands(commands, common, _add_pipeline)
    return parser


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--target",
        default=default(os.environ.get(TARGET_ENV, DEFAULT_TARGET)),
        help=f"gateway host:port (env {TARGET_ENV}, default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--api-key",
        default=default(None),
        help=f"API key (env {API_KEY_ENV}, else the file {API_KEY_FILE})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(30.0),
        help="deadline in seconds for each call (default 30)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=default(False),
        help="connect with TLS, trusting the system's root certificates (or those of --ca)",
    )
    parser.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        default=default(None),
        help="PEM file of the certificate authorities to trust (implies --tls)",
    )


def _credentials(tls: bool, ca: Path | None) -> grpc.ChannelCredentials | None:
    """None: plaintext (the default, as `make up` serves); else TLS with the system's roots or
    the --ca file's."""
    if ca is not None:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.ssl_channel_credentials() if tls else None


def _add_pipeline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--op",
        action="append",
        default=[],
        type=_operation,
        metavar="OP",
        help=f"operation, repeatable, in order: {ops.spellings()}; any field as FIELD:VALUE, or "
        'the REST JSON, e.g. \'convert={"format": "WEBP", "lossless": true}\' (see '
        "pixmesh.ops.parse)",
    )
    parser.add_argument("--preset", default="", help="a named preset; its operations run first")
    parser.add_argument(
        "--rendition",
        action="append",
        default=[],
        type=_rendition,
        metavar="NAME=OP[;OP...]",
        help="repeatable: one more output, made by imaging operations (separated by ';') "
        "after the --op ones, e.g. 'thumb=resize=200x200,fill;convert=webp'; '@PRESET' "
        "names a preset",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    """A whole number >= 0 (a negative --limit listed every job, as 0 does)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _operation(text: str) -> ops.Operation:
    try:
        return ops.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None  # argparse hides a plain ValueError


def _rendition(text: str) -> ops.Rendition:
    try:
        return ops.parse_rendition(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- commands ----------------------------------------------------------------------------------


def _process(client: Client, args: argparse.Namespace) -> int:
    source = Path(args.file)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(sys.stderr)
    try:
        job = client.process(
            source,
            args.op,
            preset=args.preset,
            renditions=args.rendition,
            idempotency_key=args.idempotency_key,
            on_update=progress.update,
            reuse=args.reuse,
        )
    finally:
        progress.finish()
    if job.state != Job.SUCCEEDED:
        return _job_failed(job)
    _save_all(client, job, out_dir, source.stem, source)
    if job.HasField("metadata"):
        print(to_json(job.metadata))
    return 0


def _save_all(
    client: Client, job: Job, out_dir: Path, stem: str, source: Path | None = None
) -> None:
    for output in job.outputs:
        path = out_dir / output_name(stem, output, len(job.outputs))
        if source is not None and path.resolve() == source.resolve():
            path = path.with_stem(path.stem + "-out")  # never overwrite the input
        client.save_output(job.job_id, path, output.index)
        print(f"saved {path} ({output.width}x{output.height}, {output.size_bytes} bytes)")


def _plan(client: Client, args: argparse.Namespace) -> int:
    resp = client.plan_job(args.image_id, args.op, preset=args.preset, renditions=args.rendition)
    print(to_json(resp))
    return 0


def _upload(client: Client, args: argparse.Namespace) -> int:
    upload = client.upload_via_url if args.presigned else client.upload
    print(to_json(upload(Path(args.file))))
    return 0


def _jobs_list(client: Client, args: argparse.Namespace) -> int:
    jobs = client.list_jobs(args.state)
    listed = islice(jobs, args.limit) if args.limit > 0 else jobs
    if args.json:
        print(to_json(ListJobsResponse(jobs=listed)))
        return 0
    for line in jobs_table(listed):
        print(line)
    return 0


def _jobs_get(client: Client, args: argparse.Namespace) -> int:
    print(to_json(client.get_job(args.job_id)))
    return 0


def _jobs_watch(client: Client, args: argparse.Namespace) -> int:
    progress = Progress(sys.stderr)
    job: Job | None = None
    try:
        for job in client.watch_job(args.job_id):
            progress.update(job)
    finally:
        progress.finish()
    if job is None or job.state != Job.SUCCEEDED:
        return _job_failed(job) if job is not None else 1
    print(progress_line(job))
    return 0


def _jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    print(to_json(client.cancel_job(args.job_id)))
    return 0


def _download(client: Client, args: argparse.Namespace) -> int:
    if args.all:
        if args.output == "-":
            raise ValueError("--all writes files: give a directory with -o")
        job = client.get_job(args.job_id)
        if not job.outputs:
            raise ValueError(f"job {args.job_id} has no outputs ({Job.State.Name(job.state)})")
        out_dir = Path(args.output or ".")
        out_dir.mkdir(parents=True, exist_ok=True)
        _save_all(client, job, out_dir, args.job_id)
        return 0
    if args.output == "-":
        data = client.download_output(args.job_id, args.index, rendition=args.rendition)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    if args.output:
        path = client.save_output(
            args.job_id, Path(args.output), args.index, rendition=args.rendition
        )
    else:
        job = client.get_job(args.job_id)
        if args.rendition is not None:
            output = next((o for o in job.outputs if o.rendition == args.rendition), None)
            missing = f"no output of rendition {args.rendition!r}"
        else:
            output = next((o for o in job.outputs if o.index == args.index), None)
            missing = f"no output {args.index}"
        if output is None:
            raise ValueError(f"job {args.job_id} has {missing}")
        name = output_name(args.job_id, output, len(job.outputs))
        path = client.save_output(args.job_id, Path(name), output.index)
    print(f"saved {path}")
    return 0


def _ops(client: Client, args: argparse.Namespace) -> int:
    resp = client.list_operations()
    return print_listing(resp, args.json, operations_table(resp))


def _status(client: Client, args: argparse.Namespace) -> int:
    clear = args.watch is not None and not args.json and sys.stdout.isatty()
    while True:
        try:
            status = client.fleet_status()
        except errors.PixmeshError as exc:
            if args.watch is None:
                raise
            _fail(f"{exc.code.name}: {exc.message}")  # a watch outlives a bad moment
            sleep(args.watch)
            continue
        if args.json:
            print(to_json(status, indent=None if args.watch else 2))
        else:
            if clear:  # home and clear: a screen that refreshes in place
                print("\x1b[H\x1b[2J", end="")
            elif args.watch is not None:
                print(strftime("%Y-%m-%d %H:%M:%S"))  # a log of tables, each one dated
            for line in fleet_table(status):
                print(line)
        sys.stdout.flush()
        if args.watch is None:
            return 0
        sleep(args.watch)


def _job_failed(job: Job) -> int:
    state = Job.State.Name(job.state)
    _fail(f"job {job.job_id} {state}: {error_text(job.error)}" if job.HasField("error") else state)
    return 1


def _fail(message: str) -> None:
    print(f"pixmesh: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
