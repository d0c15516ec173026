"""Where a webhook may point: hosts whose every address is public (no SSRF into the deployment's
own network). The gateway checks a webhook at CreateJob, the jobs service again before each
delivery (DNS may have changed since) and then connects to the address it checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(ip: IPAddress) -> bool:
    """False for private, loopback, link-local, shared, reserved, multicast and unspecified
    addresses (an IPv4-mapped IPv6 address is judged as its IPv4 address)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def public_address(host: str, port: int, timeout_s: float) -> tuple[str | None, str | None]:
    """(why `host` is refused, None), or (None, its first address) when every address it
    resolves to (within `timeout_s`) is public. An IP literal is judged as it is."""
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            async with asyncio.timeout(timeout_s):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError):
            return f"host {host!r} does not resolve", None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        return f"host {host!r} does not resolve", None
    for ip in addresses:
        if not is_public(ip):
            return f"host {host!r} resolves to a non-public address ({ip})", None
    return None, str(addresses[0])
