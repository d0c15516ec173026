"""Ports: defaults agree with the services' settings; free ports are distinct and usable."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import socket
from pathlib import Path

import pytest

from deploy.local import SERVICES, PortInUseError, Ports, Stack
from services.runtime.settings import ServiceSettings


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = Ports.free()
    values = [port for _, port in ports.items()]
    assert len(values) == len(dataclasses.fields(Ports))
    assert len(set(values)) == len(values)
    assert ports != Ports()
    for port in values:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_default_ports_do_not_clash() -> None:
    values = [port for _, port in Ports().items()]
    assert len(set(values)) == len(values)


def test_default_stack_urls_match_service_settings_defaults(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports())
    defaults = ServiceSettings()
    assert stack.nats_url == defaults.nats_url
    assert stack.database_url == defaults.database_url
    assert stack.redis_url == defaults.redis_url
    assert stack.s3_endpoint == defaults.s3_endpoint
    assert stack.s3_bucket == defaults.s3_bucket
    assert stack.s3_access_key == defaults.s3_access_key.get_secret_value()
    assert stack.s3_secret_key == defaults.s3_secret_key.get_secret_value()


@pytest.mark.parametrize("name", SERVICES)
def test_default_service_port_matches_its_settings(name: str) -> None:
    module = pytest.importorskip(f"services.{name}.settings")
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls.__module__ == module.__name__
    ]
    assert classes, f"no ServiceSettings subclass in {module.__name__}"
    for cls in classes:
        assert cls.model_fields["grpc_port"].default == Ports().service(name)
        assert cls.model_fields["metrics_port"].default == Ports().metrics(name)


def test_service_port_rejects_non_services() -> None:
    with pytest.raises(KeyError):
        Ports().service("postgres")
    with pytest.raises(KeyError):
        Ports().metrics("postgres")


def test_check_available_names_the_busy_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        ports = dataclasses.replace(Ports.free(), valkey=busy)
        with pytest.raises(PortInUseError, match=f"port {busy} \\(valkey\\)") as info:
            ports.check_available()
    assert info.value.port == busy
    Ports.free().check_available()  # and free ones pass


def test_unknown_service_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        Stack(tmp_path, services=("jobs", "nope"))


def test_modules_import_without_side_effects() -> None:
    # The CLI imports these on every `make down`: they must not start or create anything.
    for module in ("deploy.local.__main__", "deploy.observability.otlp_sink"):
        importlib.import_module(module)
