"""The gateway's checks on a webhook URL and secret (services/gateway/webhooks.py)."""

from __future__ import annotations

import ipaddress

import pytest

from pixmesh.common.v1 import job_pb2
from services.gateway.webhooks import check_url_syntax, check_webhook, is_public
from services.runtime.errors import InvalidArgument


def hook(url: str, secret: str = "") -> job_pb2.Webhook:
    return job_pb2.Webhook(url=url, secret=secret)


async def rejected(webhook: job_pb2.Webhook, allow_private: bool = False) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        await check_webhook(webhook, allow_private)
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://93.184.215.14/hook",  # http without the private allowance
        "ftp://93.184.215.14/hook",
        "https://user:pw@93.184.215.14/hook",
        "https://token@93.184.215.14/hook",
        "https:///nohost",
        "https://93.184.215.14:99999/hook",
        "https://93.184.215.14/a b",
        "https://93.184.215.14/" + "a" * 2048,
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",
        "https://localhost/hook",  # resolves to loopback
    ],
)
async def test_bad_urls_are_invalid_on_webhook_url(url: str) -> None:
    err = await rejected(hook(url))
    assert err.reason == "BAD_WEBHOOK_URL"
    assert [v.field for v in err.violations] == ["webhook.url"]


async def test_a_host_that_does_not_resolve_is_invalid() -> None:
    err = await rejected(hook("https://no-such-host.invalid/hook"))
    assert "does not resolve" in err.violations[0].description


async def test_public_https_passes() -> None:
    await check_webhook(hook("https://93.184.215.14/hook?x=1", "k" * 256), False)
    await check_webhook(hook("https://[2606:4700::1111]:8443/hook"), False)


async def test_private_allowance_admits_http_and_loopback_only_when_set() -> None:
    await check_webhook(hook("http://127.0.0.1:8000/hook"), True)
    await check_webhook(hook("http://localhost:8000/hook"), True)
    await check_webhook(hook("https://10.0.0.5/hook"), True)
    # Still refused with the allowance: credentials, other schemes, length.
    for url in ["http://u:p@127.0.0.1/h", "ftp://127.0.0.1/h", "http://127.0.0.1/" + "a" * 2048]:
        assert (await rejected(hook(url), True)).reason == "BAD_WEBHOOK_URL"


async def test_secret_at_most_256_bytes() -> None:
    err = await rejected(hook("https://93.184.215.14/hook", "é" * 129))  # 258 bytes
    assert [v.field for v in err.violations] == ["webhook.secret"]


def test_syntax_gives_host_and_default_port() -> None:
    assert check_url_syntax("https://Example.com/x", False) == ("example.com", 443)
    assert check_url_syntax("http://example.com:8080/x", True) == ("example.com", 8080)


def test_is_public() -> None:
    assert is_public(ipaddress.ip_address("8.8.8.8"))
    assert not is_public(ipaddress.ip_address("172.16.0.1"))
    assert not is_public(ipaddress.ip_address("224.0.0.1"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
