"""`make test` from a private checkout: cloned as root into a folder only its owner may enter
(mode 0700, like /root or a `mktemp -d`), the venv's Postgres binaries are out of reach of the
system user the server runs as. The server must still start, and the folder keep its mode."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import Ports, probes, servers
from deploy.local.ports import HOST
from deploy.local.process import ManagedProcess, identity

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another user"),
]


@pytest.fixture
def private_checkout(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 0700 folder holding a venv's site-packages with the Postgres wheel's files (hard links
    of the installed ones), which servers.PG_BIN then points into."""
    private = Path(tempfile.mkdtemp(prefix="pixmesh-private-"))  # 0700, as mktemp -d makes
    site = private / "pixmesh" / ".venv" / "lib" / "site-packages"
    installed = servers.PG_BIN.parents[2]
    for source in servers._mirrored():
        target = site / source.relative_to(installed)
        shutil.copytree(source, target, symlinks=True, copy_function=servers._link_or_copy)
    monkeypatch.setattr(servers, "PG_BIN", site / servers.PG_BIN.relative_to(installed))
    try:
        yield private
    finally:
        shutil.rmtree(private)


def test_postgres_starts_from_a_venv_in_a_private_folder(
    private_checkout: Path, tmp_path: Path
) -> None:
    assert stat.S_IMODE(private_checkout.stat().st_mode) == 0o700
    user = servers.postgres_system_user()
    assert user is not None
    servers._ensure_system_user(user)
    # The situation is real: the server's user cannot run the venv's binaries where they are.
    denied = subprocess.run(
        ["test", "-x", str(servers.PG_BIN / "postgres")], timeout=10, **identity(user)
    )
    assert denied.returncode != 0

    data_dir = tmp_path / "postgres"
    assert servers.prepare_postgres(data_dir) == user  # initdb, as that user
    ports = Ports.free()
    spec = servers.postgres_spec(ports, data_dir, user, durable=False)
    assert not Path(spec.argv[0]).is_relative_to(private_checkout)
    server = ManagedProcess(spec, tmp_path / "postgres.log")
    server.start()
    try:
        server.wait_ready(
            lambda: probes.postgres_accepting(servers.PG_BIN, HOST, ports.postgres), timeout=60
        )
        servers.bootstrap_postgres(ports.postgres)  # psql, as root, from the private venv
    finally:
        server.stop()
    # Nothing was opened up to get there.
    assert stat.S_IMODE(private_checkout.stat().st_mode) == 0o700


def test_the_installed_binaries_are_used_where_the_user_reaches_them(tmp_path: Path) -> None:
    assert servers.postgres_bin(tmp_path / "postgres", None) == servers.PG_BIN
    if servers._reachable_by_others(servers.PG_BIN):
        assert servers.postgres_bin(tmp_path / "postgres", "someone") == servers.PG_BIN
