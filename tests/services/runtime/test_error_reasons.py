"""Every ErrorInfo reason the services send is a value of pixmesh.common.v1.Error.Reason, the one
list that SDK users and services share (the wire text is the value's name)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from pixmesh.common.v1.errors_pb2 import Error

SERVICES = Path(__file__).resolve().parents[3] / "services"
_REASON = re.compile(r"""\breason\s*[:=]\s*(?:str\s*=\s*)?["']([A-Z][A-Z0-9_]+)["']""")


@pytest.mark.parametrize(
    "service", ["runtime", "gateway", "jobs", "imaging", "inference", "metadata"]
)
def test_reason_constants_are_enum_values(service: str) -> None:
    module = importlib.import_module(f"services.{service}.errors")
    constants = {
        value
        for name, value in vars(module).items()
        if isinstance(value, str) and name == value and name.isupper()
    }
    assert constants <= set(Error.Reason.keys()), constants - set(Error.Reason.keys())


def test_reasons_written_in_the_code_are_enum_values() -> None:
    found = {
        match[1]
        for path in SERVICES.rglob("*.py")
        if "build" not in path.parts
        for match in _REASON.finditer(path.read_text())
    }
    assert found, "the pattern finds the reasons"
    assert found <= set(Error.Reason.keys()), sorted(found - set(Error.Reason.keys()))
