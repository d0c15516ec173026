"""runtime.server.channel_target: one address as it is, several replicas balanced."""

from __future__ import annotations

import pytest

from services.runtime.server import channel_target


def test_one_address_is_kept() -> None:
    assert channel_target("127.0.0.1:50052") == "127.0.0.1:50052"
    assert channel_target("dns:///jobs-headless:50052") == "dns:///jobs-headless:50052"


def test_several_replicas_become_a_static_list() -> None:
    assert channel_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"


@pytest.mark.parametrize("bad", ["jobs-1:50052,jobs-2:50052", "127.0.0.1,127.0.0.2:1"])
def test_a_list_must_be_ipv4_host_port(bad: str) -> None:
    with pytest.raises(ValueError):
        channel_target(bad)
