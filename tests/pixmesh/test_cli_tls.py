"""`pixmesh --tls` / `--ca FILE` against a real TLS gRPC server on loopback, with a self-signed
certificate made here (the fake gateway behind it)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pixmesh.cli import main
from pixmesh.gateway.v1 import gateway_pb2_grpc
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import FakeGateway, SyncServicer


def _self_signed() -> tuple[bytes, bytes]:
    """A key and a certificate for 127.0.0.1 and localhost that signs itself (its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pixmesh test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    return _self_signed()


@pytest.fixture
def ca_file(certificate: tuple[bytes, bytes], tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(certificate[1])
    return path


@pytest.fixture
def tls_target(fake: FakeGateway, certificate: tuple[bytes, bytes]) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(SyncServicer(fake), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([certificate]))
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def run(target: str, *args: str) -> int:
    return main(["--target", target, "--api-key", API_KEY, "--timeout", "5", *args])


@pytest.mark.parametrize("where", ["before", "after"])
def test_ca_trusts_the_servers_certificate(
    tls_target: str, ca_file: Path, fake: FakeGateway, where: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    args = ["--ca", str(ca_file), "ops"] if where == "before" else ["ops", "--ca", str(ca_file)]
    assert run(tls_target, *args) == 0
    assert "resize (imaging)" in capsys.readouterr().out
    # The key went over the encrypted channel, as on a plaintext one.
    assert fake.calls[0].metadata["authorization"] == f"Bearer {API_KEY}"


def test_tls_with_the_system_roots_rejects_a_self_signed_server(
    tls_target: str, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tls_target, "--tls", "ops") == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert fake.calls == []  # the handshake failed: no call reached the server


def test_plaintext_does_not_reach_a_tls_server(
    tls_target: str, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tls_target, "ops") == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert fake.calls == []


def test_tls_does_not_reach_a_plaintext_server(
    sync_target: str, ca_file: Path, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(sync_target, "--ca", str(ca_file), "ops") == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert fake.calls == []


def test_a_missing_ca_file_is_an_error(
    tls_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tls_target, "--ca", str(tmp_path / "nope.pem"), "ops") == 1
    assert "nope.pem" in capsys.readouterr().err
