"""Operator commands for the gateway's tenants and keys.

    python -m services.gateway.admin create-key --tenant dev

prints the new API key on the last line of stdout (it is stored only as a hash).
"""

from __future__ import annotations

import argparse
import asyncio

from services.gateway.app import MIGRATIONS
from services.gateway.repository import GatewayRepository
from services.gateway.settings import GatewaySettings
from services.runtime import db


async def _create_key(settings: GatewaySettings, tenant: str) -> str:
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await db.migrate(pool, "gateway", MIGRATIONS)
        return await GatewayRepository(pool).create_key(tenant)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-key", help="create a tenant (if new) and an API key for it")
    create.add_argument("--tenant", required=True)
    args = parser.parse_args(argv)
    if args.command == "create-key":
        key = asyncio.run(_create_key(GatewaySettings(), args.tenant))
        print(f"created API key for tenant {args.tenant!r}:")
        print(key)


if __name__ == "__main__":
    main()
