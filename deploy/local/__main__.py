"""`make up` / `make down`: the whole mesh on loopback, no Docker.

Commands:
  python -m deploy.local up     start everything, print endpoints and a dev API key, block
  python -m deploy.local down   from another terminal: stop what `up` started
  python -m deploy.local up --services jobs,gateway --no-envoy   a subset (debug one service)
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from deploy.local.ports import SERVICES, PortInUseError, Ports
from deploy.local.process import StackError
from deploy.local.servers import REPO_ROOT
from deploy.local.stack import Stack
from deploy.local.state import read_state, stop_from_state

DEFAULT_ROOT = REPO_ROOT / ".pixmesh"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (`down`, kill) takes the same clean path as Ctrl-C.
    raise KeyboardInterrupt


def _endpoints(stack: Stack, api_key: str | None, key_file: Path) -> str:
    p = stack.ports
    rows: list[tuple[str, str]] = []
    if stack.envoy:
        rows += [
            (
                "REST + gRPC (Envoy)",
                f"{stack.rest_url}   grpcurl -plaintext {stack.grpc_target} list",
            ),
            ("Envoy admin", stack.envoy_admin_url),
        ]
    rows += [
        (name, f"{stack.service_addr(name)}   metrics {stack.metrics_url(name)}")
        for name in stack.services
    ]
    rows += [
        ("NATS", f"{stack.nats_url}   monitor http://127.0.0.1:{p.nats_monitor}"),
        ("Postgres", stack.database_url),
        ("Valkey", stack.redis_url),
        ("S3 (SeaweedFS)", f"{stack.s3_endpoint}   bucket {stack.s3_bucket}   "
                           f"key {stack.s3_access_key} / {stack.s3_secret_key}"),
        ("OTLP traces", f"{stack.otlp_endpoint} -> {_rel(stack.trace_file)}"),
        ("  read them", f"python -m deploy.observability.otlp_sink show --file {_rel(stack.trace_file)}"
                        " [--service pixmesh-envoy] [--trace-id ID]"),
        ("Logs", f"{_rel(stack.log_dir)}/<name>.log"),
    ]  # fmt: skip
    if api_key is not None:
        rows.append(("Dev API key", f"{api_key}   (tenant dev, saved in {_rel(key_file)})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def up(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    services = [s for s in args.services.split(",") if s] if args.services is not None else SERVICES
    try:
        stack = Stack(root, Ports(), envoy=not args.no_envoy, services=services)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    state = read_state(stack.state_file)
    if state is not None and state.owner_alive():
        print(
            f"pixmesh is already up (pid {state.owner_pid}); `make down` stops it", file=sys.stderr
        )
        return 1
    if state is not None:
        stop_from_state(stack.state_file)  # leftovers of an `up` that was SIGKILLed
    try:
        stack.ports.check_available()
    except PortInUseError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)
    key_file = root / "api-key"
    try:
        print(f"starting pixmesh under {_rel(root)} ...", flush=True)
        stack.start()
        api_key = None
        if "gateway" in stack.services:
            api_key = stack.create_api_key("dev")
            key_file.write_text(api_key + "\n")
            key_file.chmod(0o600)
        took = ", ".join(f"{name} {sec:.1f}s" for name, sec in stack.timings.items())
        print(f"\npixmesh is up ({took}). Ctrl-C stops everything.\n")
        print(_endpoints(stack, api_key, key_file), flush=True)
        _watch(stack)
    except KeyboardInterrupt:
        pass
    except StackError as exc:
        print(f"\nstart failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan servers
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping ...", flush=True)
        stack.stop()
        print("stopped.")
    return 0


def _watch(stack: Stack) -> None:
    """Block until interrupted; say so when a server dies instead of failing silently."""
    reported: set[str] = set()
    while True:
        time.sleep(1)
        for name, status in stack.exited().items():
            if name not in reported:
                log = _rel(stack.log_path(name))
                print(f"!! {name} exited with status {status}; see {log}", file=sys.stderr)
                reported.add(name)


def down(args: argparse.Namespace) -> int:
    state_file = Path(args.root).resolve() / "run" / "stack.json"
    stopped = stop_from_state(state_file)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="data and run folder")
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="start the mesh and block until Ctrl-C")
    up_cmd.add_argument("--services", help=f"comma-separated subset of {','.join(SERVICES)}")
    up_cmd.add_argument("--no-envoy", action="store_true", help="do not start Envoy")
    commands.add_parser("down", help="stop a mesh started by `up`")
    args = parser.parse_args(argv)
    return up(args) if args.command == "up" else down(args)


if __name__ == "__main__":
    raise SystemExit(main())
