"""`pixmesh keys ...` and `pixmesh usage`: API keys of the caller's tenant and its limits.

    pixmesh keys create --name ci --scopes read,write [--ttl 30d]   # prints the key once
    pixmesh keys list [--all] [--json]
    pixmesh keys revoke KEY_ID
    pixmesh keys rotate KEY_ID [--grace 1h]                        # prints the new key once
    pixmesh usage [--json]

Key management needs a key with the admin scope (`make up` prints one).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from pixmesh._render import print_listing
from pixmesh.client import Client
from pixmesh.gateway.v1 import gateway_pb2 as gw

Command = Callable[[Client, argparse.Namespace], int]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """ "90", "90s", "15m", "2h", "30d"."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError("a duration like 90s, 15m, 2h or 30d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `keys` and `usage` on the CLI's subparsers."""
    keys = commands.add_parser("keys", help="API keys of your tenant (admin scope)")
    sub = keys.add_subparsers(title="commands", required=True, metavar="COMMAND")
    create = sub.add_parser("create", parents=[common], help="create a key (printed once)")
    create.add_argument("--name", default="")
    create.add_argument("--scopes", default="", help="comma-separated read,write,admin")
    create.add_argument("--ttl", type=duration, help="expires after, e.g. 30d (default never)")
    create.set_defaults(command=_create)
    listing = sub.add_parser("list", parents=[common], help="list keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(command=_list)
    revoke = sub.add_parser("revoke", parents=[common], help="revoke a key now")
    revoke.add_argument("key_id")
    revoke.set_defaults(command=_revoke)
    rotate = sub.add_parser("rotate", parents=[common], help="replace a key (printed once)")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=duration, help="old key valid for (default 1d)")
    rotate.set_defaults(command=_rotate)
    usage = commands.add_parser("usage", parents=[common], help="your tenant's limits and use")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(command=_usage)


def _when(ts: Timestamp, has: bool) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if has else "-"


def _row(key: gw.ApiKey) -> str:
    state = "revoked" if key.HasField("revoked_at") else ""
    return (
        f"{key.key_id:<22} {key.prefix:<12} {','.join(key.scopes):<17} "
        f"{_when(key.created_at, True):<20} {_when(key.last_used_at, key.HasField('last_used_at')):<20} "
        f"{_when(key.expires_at, key.HasField('expires_at')):<20} {key.name} {state}".rstrip()
    )


def _create(client: Client, args: argparse.Namespace) -> int:
    scopes = [s for s in args.scopes.split(",") if s.strip()]
    resp = client.create_api_key(args.name, scopes, ttl=args.ttl)
    print(f"created {resp.key.key_id} (scopes {','.join(resp.key.scopes)}); the key, shown once:")
    print(resp.secret)
    return 0


def _list(client: Client, args: argparse.Namespace) -> int:
    keys = client.list_api_keys(include_revoked=args.all)
    return print_listing(gw.ListApiKeysResponse(keys=keys), args.json, _keys_table(keys))


def _keys_table(keys: Iterable[gw.ApiKey]) -> Iterator[str]:
    yield f"{'KEY':<22} {'PREFIX':<12} {'SCOPES':<17} {'CREATED':<20} {'LAST USED':<20} {'EXPIRES':<20} NAME"
    for key in keys:
        yield _row(key)


def _revoke(client: Client, args: argparse.Namespace) -> int:
    key = client.revoke_api_key(args.key_id)
    print(f"revoked {key.key_id} at {_when(key.revoked_at, True)}")
    return 0


def _rotate(client: Client, args: argparse.Namespace) -> int:
    resp = client.rotate_api_key(args.key_id, grace_period=args.grace)
    old = resp.old_key
    print(f"{old.key_id} stays valid until {_when(old.expires_at, old.HasField('expires_at'))};")
    print(f"its replacement {resp.key.key_id}, shown once:")
    print(resp.secret)
    return 0


def _usage(client: Client, args: argparse.Namespace) -> int:
    resp = client.usage()
    return print_listing(resp, args.json, _usage_table(resp))


def _usage_table(resp: gw.GetUsageResponse) -> Iterator[str]:
    yield f"{'QUOTA':<20} {'USED':>14} {'LIMIT':>14}"
    for quota in resp.quotas:
        limit = str(quota.limit) if quota.limit else "unlimited"
        yield f"{quota.name:<20} {quota.used:>14} {limit:>14}"
