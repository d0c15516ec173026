"""The infrastructure servers' command lines and configs (nothing is started here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploy.local import Ports, servers


def _flags(argv: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`-name=value` arguments as a dict (the weed style)."""
    return dict(a.lstrip("-").split("=", 1) for a in argv if a.startswith("-") and "=" in a)


def test_nats_runs_jetstream_on_loopback(tmp_path: Path) -> None:
    ports = Ports.free()
    argv = list(servers.nats_spec(ports, tmp_path).argv)
    assert "-js" in argv
    assert argv[argv.index("-sd") + 1] == str(tmp_path)
    assert argv[argv.index("-a") + 1] == "127.0.0.1"
    assert argv[argv.index("-p") + 1] == str(ports.nats)
    assert argv[argv.index("-m") + 1] == str(ports.nats_monitor)


def test_postgres_listens_on_tcp_only_and_stops_fast(tmp_path: Path) -> None:
    ports = Ports.free()
    spec = servers.postgres_spec(ports, tmp_path, "someone", durable=True)
    argv = list(spec.argv)
    assert argv[argv.index("-p") + 1] == str(ports.postgres)
    assert argv[argv.index("-h") + 1] == "127.0.0.1"
    assert argv[argv.index("-k") + 1] == ""
    assert "fsync=off" not in argv
    assert spec.user == "someone"
    assert spec.stop_signal == signal.SIGINT  # "fast" shutdown; SIGTERM waits for clients
    fast = servers.postgres_spec(ports, tmp_path, None, durable=False)
    assert "fsync=off" in fast.argv


def test_valkey_keeps_nothing_on_disk(tmp_path: Path) -> None:
    ports = Ports.free()
    argv = list(servers.valkey_spec(ports, tmp_path).argv)
    assert argv[argv.index("--port") + 1] == str(ports.valkey)
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--daemonize") + 1] == "no"  # we supervise it


def test_seaweedfs_runs_under_a_go_memory_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    spec = servers.seaweedfs_spec(Ports.free(), tmp_path, tmp_path / "ids.json")
    assert spec.env is not None
    # The measured default (bench/seaweedfs.py --memory; BENCHMARKS.md, "Soak and retention").
    assert spec.env.get("GOMEMLIMIT") == servers.WEED_GOMEMLIMIT == "448MiB"
    assert spec.env["PATH"] == os.environ["PATH"]  # the rest of our environment too
    monkeypatch.setenv("GOMEMLIMIT", "256MiB")  # an operator's own setting wins
    spec = servers.seaweedfs_spec(Ports.free(), tmp_path, tmp_path / "ids.json")
    assert spec.env is not None and spec.env["GOMEMLIMIT"] == "256MiB"


def test_seaweedfs_binds_every_port_it_opens_to_ours(tmp_path: Path) -> None:
    ports = Ports.free()
    flags = _flags(servers.seaweedfs_spec(ports, tmp_path, tmp_path / "ids.json").argv)
    assert flags["ip.bind"] == flags["ip"] == "127.0.0.1"
    expected = {
        "s3.port": ports.s3,
        "s3.port.grpc": ports.s3_grpc,
        "master.port": ports.weed_master,
        "master.port.grpc": ports.weed_master_grpc,
        "volume.port": ports.weed_volume,
        "volume.port.grpc": ports.weed_volume_grpc,
        "filer.port": ports.weed_filer,
        "filer.port.grpc": ports.weed_filer_grpc,
        "admin.port": ports.weed_admin,
        "admin.port.grpc": ports.weed_admin_grpc,
    }
    assert {k: int(flags[k]) for k in expected} == expected
    # Components that would open more (fixed) ports are off.
    assert flags["webdav"] == "false"
    assert flags["s3.port.iceberg"] == flags["s3.port.lance"] == "0"
    assert flags["s3.config"] == str(tmp_path / "ids.json")


def test_seaweedfs_keeps_its_logs_and_sockets_in_the_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    spec = servers.seaweedfs_spec(
        Ports.free(), tmp_path / "data", tmp_path / "ids.json", run_dir=run_dir
    )
    argv = list(spec.argv)
    flags = _flags(argv)
    # glog's -logdir is a global option: it must come before the command to be read at all.
    assert argv.index(f"-logdir={run_dir / 'weed-logs'}") < argv.index("mini")
    assert (run_dir / "weed-logs").is_dir()  # glog does not create it
    assert flags["filer.localSocket"] == str(run_dir / "weed-filer.sock")
    assert flags["s3.localSocket"] == str(run_dir / "weed-s3.sock")
    # Every path weed is given lies in our folders: nothing of its own in /tmp.
    paths = [
        v for v in flags.values() if v.startswith("/") and not v.startswith(servers.binary("weed"))
    ]
    assert paths and all(Path(v).is_relative_to(tmp_path) for v in paths)
    # Without a run_dir they live in the data folder, not in /tmp.
    flags = _flags(servers.seaweedfs_spec(Ports.free(), tmp_path, tmp_path / "ids.json").argv)
    assert flags["logdir"] == str(tmp_path / "weed-logs")
    assert flags["s3.localSocket"] == str(tmp_path / "weed-s3.sock")


def test_seaweedfs_keeps_weeds_default_socket_when_the_run_dir_is_too_deep(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100)
    flags = _flags(servers.seaweedfs_spec(Ports.free(), deep, deep / "ids.json").argv)
    assert "s3.localSocket" not in flags and "filer.localSocket" not in flags  # weed would exit
    assert flags["logdir"] == str(deep / "weed-logs")  # no length limit on a log folder


def _weed_local_sockets(ports: Ports) -> list[Path]:
    """Where weed puts its S3 and filer Unix sockets for these ports without our flags."""
    return [
        Path(f"/tmp/seaweedfs-s3-{ports.s3}.sock"),
        Path(f"/tmp/seaweedfs-filer-{ports.weed_filer}.sock"),
    ]


def _clean_tmp(ports: Ports) -> bool:
    everything = [*_weed_local_sockets(ports), *servers.weed_grpc_sockets(ports)]
    return not any(p.exists() for p in everything)


@pytest.mark.integration
def test_a_real_seaweedfs_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    # /tmp is the machine's: a weed from before cfb9bb5 (or another checkout) may have left a
    # socket at the default path of a port we draw, which would say nothing about this start.
    ports = next(p for p in (Ports.free() for _ in range(50)) if _clean_tmp(p))
    run_dir = tmp_path / "run"
    (tmp_path / "data").mkdir()
    identities = tmp_path / "ids.json"
    identities.write_text(servers.s3_identities())
    spec = servers.seaweedfs_spec(ports, tmp_path / "data", identities, run_dir=run_dir)
    started = time.time() - 1  # mtime granularity
    proc = subprocess.Popen(
        spec.argv, env=spec.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    grpc_sockets = servers.weed_grpc_sockets(ports)
    ours = [run_dir / "weed-s3.sock", run_dir / "weed-filer.sock"]
    try:
        deadline = time.monotonic() + 30
        while not all(p.is_socket() for p in [*grpc_sockets, *ours]):
            assert proc.poll() is None and time.monotonic() < deadline, "weed did not start"
            time.sleep(0.1)
        assert not any(p.exists() for p in _weed_local_sockets(ports))
        # glog names its files <program>.<host>.<user>.log.<level>.<date>-<time>.<pid>
        assert list((run_dir / "weed-logs").glob(f"weed.*.log.INFO.*.{proc.pid}"))
        # (a file of an older weed that had the same pid is not this one's)
        assert not [
            p for p in Path("/tmp").glob(f"weed.*.{proc.pid}") if p.stat().st_mtime >= started
        ]
    finally:
        proc.kill()  # what a stop timeout comes to: weed gets no chance to clean up
        proc.wait()
    # Its gRPC sockets have fixed /tmp paths (no flag moves them); the stack removes them.
    assert all(p.is_socket() for p in grpc_sockets)
    servers.remove_weed_grpc_sockets(ports)
    assert not any(p.exists() for p in grpc_sockets)


def test_s3_identity_config() -> None:
    config = json.loads(servers.s3_identities("ak", "sk"))
    (identity,) = config["identities"]
    assert identity["credentials"] == [{"accessKey": "ak", "secretKey": "sk"}]
    assert {"Read", "Write", "List", "Admin"} <= set(identity["actions"])


def test_envoy_runs_without_hot_restart(tmp_path: Path) -> None:
    argv = list(servers.envoy_spec(tmp_path / "envoy.json").argv)
    assert argv[argv.index("-c") + 1] == str(tmp_path / "envoy.json")
    assert "--disable-hot-restart" in argv  # lets `make up` and tests run Envoys side by side


def test_bootstrap_sql_is_idempotent() -> None:
    sql = servers.BOOTSTRAP_SQL
    assert "NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pixmesh')" in sql
    assert "NOT EXISTS (SELECT FROM pg_database WHERE datname = 'pixmesh')" in sql
    assert "OWNER pixmesh" in sql
