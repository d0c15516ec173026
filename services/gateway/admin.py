"""Operator commands for the gateway's tenants and keys (the bootstrap: no key needed).

    python -m services.gateway.admin create-key --tenant dev [--scopes read,write,admin]
        [--name NAME] [--expires-in SECONDS]

prints the new API key on the last line of stdout (it is stored only as a hash). Once an admin
key exists, keys are managed through the public API (`pixmesh keys ...`).

    python -m services.gateway.admin set-limits --tenant acme --requests-per-second 20
        [--running-jobs N] [--jobs-per-day N] [--stored-bytes N]

sets a tenant's own limits (0: unlimited; `default`: back to the deployment's setting).

    python -m services.gateway.admin set-retention --tenant acme --outputs 30d --sources 365d

deletes the tenant's finished jobs and their outputs 30 days after they finished, and its images
(with their jobs, outputs and metadata) a year after their upload (`none`: kept).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta

from services.gateway.app import MIGRATIONS
from services.gateway.auth import DEFAULT_SCOPES, parse_scopes
from services.gateway.keys import KeyStore, NewKey
from services.gateway.repository import LIMIT_COLUMNS, GatewayRepository
from services.gateway.settings import GatewaySettings
from services.runtime import db


async def _create_key(
    settings: GatewaySettings,
    tenant: str,
    scopes: frozenset[str] = DEFAULT_SCOPES,
    name: str = "",
    expires_in_s: float | None = None,
) -> NewKey:
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool, "gateway", MIGRATIONS)
        expires = (
            None if expires_in_s is None else datetime.now(UTC) + timedelta(seconds=expires_in_s)
        )
        return await KeyStore(pool).create(tenant, scopes, name, expires)
    finally:
        await pool.close()


async def _set_limits(
    settings: GatewaySettings, tenant: str, limits: dict[str, int | None]
) -> dict[str, int | None]:
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool, "gateway", MIGRATIONS)
        repo = GatewayRepository(pool)
        await repo.set_tenant_limits(tenant, limits)
        return await repo.tenant_limits(tenant)
    finally:
        await pool.close()


DEFAULT = -1  # `--x default` on the command line: back to the deployment's setting


def _limit(value: str) -> int:
    if value == "default":
        return DEFAULT
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("0 (unlimited) or more, or 'default'")
    return number


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _retention(value: str) -> int:
    """ "30d", "12h", "90m", "3600" (seconds) or "none" (0: kept until deleted)."""
    if value == "none":
        return 0
    unit = value[-1] if value[-1] in _UNITS else "s"
    number = value[:-1] if value[-1] in _UNITS else value
    try:
        seconds = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError("a duration like 30d, 12h or 3600, or none") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("positive, or none")
    return seconds


async def _set_retention(
    settings: GatewaySettings, tenant: str, outputs_s: int | None, sources_s: int | None
) -> None:
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool, "gateway", MIGRATIONS)
        await GatewayRepository(pool).set_retention(tenant, outputs_s, sources_s)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-key", help="create a tenant (if new) and an API key for it")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--scopes",
        default=",".join(sorted(DEFAULT_SCOPES)),
        help="comma-separated: read, write, admin (default read,write)",
    )
    create.add_argument("--name", default="")
    create.add_argument("--expires-in", type=float, default=None, metavar="SECONDS")
    limits = sub.add_parser("set-limits", help="set a tenant's own limits")
    limits.add_argument("--tenant", required=True)
    for column in LIMIT_COLUMNS:
        limits.add_argument(f"--{column.replace('_', '-')}", type=_limit, metavar="N|default")
    retention = sub.add_parser(
        "set-retention", help="delete a tenant's outputs and sources after some time"
    )
    retention.add_argument("--tenant", required=True)
    retention.add_argument("--outputs", type=_retention, default=0, metavar="30d|none")
    retention.add_argument("--sources", type=_retention, default=0, metavar="365d|none")
    args = parser.parse_args(argv)
    if args.command == "set-retention":
        asyncio.run(
            _set_retention(
                GatewaySettings(), args.tenant, args.outputs or None, args.sources or None
            )
        )
        print(
            f"retention of tenant {args.tenant!r}: outputs {args.outputs or 'kept'} s,"
            f" sources {args.sources or 'kept'} s"
        )
    if args.command == "set-limits":
        given: dict[str, int | None] = {
            c: None if getattr(args, c) == DEFAULT else getattr(args, c)
            for c in LIMIT_COLUMNS
            if getattr(args, c) is not None
        }
        now = asyncio.run(_set_limits(GatewaySettings(), args.tenant, given))
        shown = ", ".join(f"{k}={'default' if v is None else v}" for k, v in now.items())
        print(f"limits of tenant {args.tenant!r}: {shown}")
    if args.command == "create-key":
        try:
            scopes = parse_scopes(args.scopes.split(","))
        except ValueError as exc:
            parser.error(str(exc))
        new = asyncio.run(
            _create_key(GatewaySettings(), args.tenant, scopes, args.name, args.expires_in)
        )
        print(
            f"created API key {new.info.key_id} for tenant {args.tenant!r}"
            f" (scopes {','.join(sorted(new.info.scopes))}):"
        )
        print(new.secret)


if __name__ == "__main__":
    main()
