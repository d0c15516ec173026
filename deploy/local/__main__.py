"""`make up` / `make down`: the whole mesh on loopback, no Docker.

Commands:
  python -m deploy.local up     start everything, print endpoints and a dev API key, block
  python -m deploy.local up --cluster   the same on a 3-node NATS cluster (R3 streams), with two
                                replicas of every service but inference, Envoy over both gateways
  python -m deploy.local down   from another terminal: stop what `up` started
  python -m deploy.local kill imaging-2   SIGKILL one process of a running stack (a replica,
                                "nats-2", ...); a cluster's `up` starts a replica or node again
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
from deploy.local.state import kill_from_state, read_state, stop_from_state

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
            ("Web console", f"{stack.rest_url}/   (sign in with the key below)"),
            (
                "REST + gRPC (Envoy)",
                f"{stack.rest_url}   grpcurl -plaintext {stack.grpc_target} list",
            ),
            ("Envoy admin", stack.envoy_admin_url),
        ]
    rows += [
        (r.name, f"{stack.service_addr(r.name)}   metrics {stack.metrics_url(r.name)}")
        for name in stack.services
        for r in stack.replicas(name)
    ]
    if stack.cluster:
        rows += [
            (
                f"NATS node {n} ({stack.nats_process(n)})",
                f"{stack.nats_node_url(n)}   monitor {stack.nats_monitor_url(n)}   "
                f"route {p.nats_route(n)}",
            )
            for n in range(1, stack.nats_nodes + 1)
        ]
        rows += [
            ("  clients use", stack.nats_url),
            (
                "Chaos",
                "python -m deploy.local kill imaging-2 (or nats-2, gateway-1, ...): "
                "the others carry on, and this terminal starts it again",
            ),
        ]
    else:
        rows.append(("NATS", f"{stack.nats_url}   monitor {stack.nats_monitor_url()}"))
    rows += [
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
        rows.append(("Dev API key", f"{api_key}   (tenant dev, admin, saved in {_rel(key_file)})"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def up(args: argparse.Namespace) -> int:
    root = Path(args.root).resolve()
    services = [s for s in args.services.split(",") if s] if args.services is not None else SERVICES
    try:
        stack = Stack(
            root, Ports(), envoy=not args.no_envoy, services=services, cluster=args.cluster
        )
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
        stack.ports.check_available(stack.ports.names(cluster=stack.cluster))
    except PortInUseError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_interrupt)
    key_file = root / "api-key"
    try:
        mode = " (cluster: 3 NATS nodes, replicated services)" if stack.cluster else ""
        print(f"starting pixmesh{mode} under {_rel(root)} ...", flush=True)
        stack.start()
        api_key = None
        if "gateway" in stack.services:
            # The operator's key on a local stack: every scope (keys, fleet status, erasure).
            api_key = stack.create_api_key("dev", "read,write,admin")
            key_file.write_text(api_key + "\n")
            key_file.chmod(0o600)
        took = ", ".join(f"{name} {sec:.1f}s" for name, sec in stack.timings.items())
        print(f"\npixmesh is up ({took}). Ctrl-C stops everything.\n")
        print(_endpoints(stack, api_key, key_file), flush=True)
        _watch(stack, revive=stack.cluster)
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


def _watch(stack: Stack, *, revive: bool = False) -> None:
    """Block until interrupted; say so when a server dies instead of failing silently. With
    `revive` (the cluster mode), start a dead service replica or NATS node again, as an
    orchestrator would."""
    reported: set[str] = set()
    while True:
        time.sleep(1)
        for name, status in stack.exited().items():
            if name in reported:
                continue
            log = _rel(stack.log_path(name))
            print(f"!! {name} exited with status {status}; see {log}", file=sys.stderr)
            reported.add(name)
            if not revive:
                continue
            try:
                if stack.revive(name):
                    print(f"   {name} is back", file=sys.stderr, flush=True)
                    reported.discard(name)
            except StackError as exc:
                print(f"   {name} did not come back: {exc}", file=sys.stderr)


def down(args: argparse.Namespace) -> int:
    state_file = Path(args.root).resolve() / "run" / "stack.json"
    stopped = stop_from_state(state_file)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def kill(args: argparse.Namespace) -> int:
    state_file = Path(args.root).resolve() / "run" / "stack.json"
    if kill_from_state(state_file, args.name):
        print(f"killed {args.name}")
        return 0
    print(f"no running process named {args.name!r} in {_rel(state_file)}", file=sys.stderr)
    return 1


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
    up_cmd.add_argument(
        "--cluster",
        action="store_true",
        help="3-node NATS JetStream cluster (R3 streams) and two replicas of each service "
        "(one of inference), Envoy balancing over the gateways",
    )
    commands.add_parser("down", help="stop a mesh started by `up`")
    kill_cmd = commands.add_parser("kill", help="SIGKILL one process of a running mesh")
    kill_cmd.add_argument("name", help="e.g. imaging-2, gateway-1, nats-2 (see run/stack.json)")
    args = parser.parse_args(argv)
    commands_run = {"up": up, "down": down, "kill": kill}
    return commands_run[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
