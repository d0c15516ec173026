"""Where the services may be pointed by a tenant.

A webhook: hosts whose every address is public (no SSRF into the deployment's own network). The
gateway checks a webhook at CreateJob, the jobs service again before each delivery (DNS may
have changed since) and then connects to the address it checked.

A storage connection's endpoint may be private (an S3-compatible store inside the cluster), but
never link-local: 169.254.0.0/16 and fe80::/10 hold the clouds' instance metadata services,
whose credentials a request from the jobs service would reach (`link_local`)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmapped(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as its IPv4 address, to be judged as one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    """False for private, loopback, link-local, shared, reserved, multicast and unspecified
    addresses."""
    ip = _unmapped(ip)
    return ip.is_global and not ip.is_multicast


def is_link_local(ip: IPAddress) -> bool:
    """169.254.0.0/16 or fe80::/10."""
    return _unmapped(ip).is_link_local


async def resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """The addresses `host` resolves to within `timeout_s` (an IP literal: itself); empty when
    it does not resolve."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def link_local(host: str, port: int, timeout_s: float) -> str | None:
    """Why `host` is refused as a storage endpoint (it is, or resolves to, a link-local
    address), or None. A host that does not resolve is left to the S3 client's own error."""
    for ip in await resolve(host, port, timeout_s):
        if is_link_local(ip):
            return f"host {host!r} is a link-local address ({ip}): not a storage endpoint"
    return None


async def public_address(host: str, port: int, timeout_s: float) -> tuple[str | None, str | None]:
    """(why `host` is refused, None), or (None, its first address) when every address it
    resolves to (within `timeout_s`) is public. An IP literal is judged as it is."""
    addresses = await resolve(host, port, timeout_s)
    if not addresses:
        return f"host {host!r} does not resolve", None
    for ip in addresses:
        if not is_public(ip):
            return f"host {host!r} resolves to a non-public address ({ip})", None
    return None, str(addresses[0])
