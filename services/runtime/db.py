"""asyncpg pool and ordered SQL migrations, applied at start-up under an advisory lock.

Each service keeps `migrations/NNNN_name.sql` beside its code and owns one schema; applied
files are recorded in `<schema>.schema_migrations`, so running them again is a no-op and two
replicas starting together do not race (pg_advisory_xact_lock serialises them).

`run_when_notified` is the one LISTEN/NOTIFY loop: background work woken by a NOTIFY that a
committed transaction sent, with a poll as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
from opentelemetry.instrumentation.utils import suppress_instrumentation

log = logging.getLogger(__name__)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection, beyond what asyncpg always does (roll back an
    open transaction, drop the client-side listeners): nothing. asyncpg's default sends
    `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release, a
    round trip per acquire; our code leaves no session state to undo: advisory locks are
    transaction-scoped (`pg_advisory_xact_lock`), cursors live inside transactions, nothing
    runs `SET` outside one, and `run_when_notified` UNLISTENs before it releases."""


async def open_pool(
    stack: contextlib.AsyncExitStack, dsn: str, schema: str, folder: Path
) -> asyncpg.Pool:
    """A service's pool, closed by `stack`, with its schema's migrations (`folder`) applied."""
    pool = await create_pool(dsn)
    stack.push_async_callback(pool.close)
    await migrate(pool, schema, folder)
    return pool


async def migrate(pool: asyncpg.Pool, schema: str, folder: Path) -> list[str]:
    """Apply the not-yet-applied `*.sql` files in `folder` in name order; return their names."""
    files = sorted(folder.glob("*.sql"))
    applied: list[str] = []
    lock_key = zlib.crc32(f"pixmesh-migrate-{schema}".encode())
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')
        }
        for path in files:
            if path.name in done:
                continue
            await conn.execute(path.read_text())
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations (name) VALUES ($1)', path.name
            )
            applied.append(path.name)
    if applied:
        log.info("applied migrations", extra={"schema": schema, "files": applied})
    return applied


async def run_when_notified(
    pool: asyncpg.Pool,
    channel: str,
    stop: asyncio.Event,
    work: Callable[[], Awaitable[bool]],
    *,
    poll_s: float = 1.0,
    what: str = "background work",
) -> None:
    """Run rounds of `work` until `stop` is set: again at once while a round returns True (a
    full batch: more is waiting), else after the next NOTIFY on `channel`, or `poll_s` at the
    latest (the safety net for a lost notification, and what brings due retries round). A round
    that raises is logged and tried again after `poll_s`. LISTEN holds one pooled connection."""
    wake = asyncio.Event()
    listener = await pool.acquire()

    def on_notify(*_: object) -> None:
        wake.set()

    await listener.add_listener(channel, on_notify)
    # Stopping wakes the loop too, which then waits on `wake` alone.
    stopping = asyncio.create_task(stop.wait())
    stopping.add_done_callback(lambda _: wake.set())
    try:
        while not stop.is_set():
            # Cleared before the round: a NOTIFY after this point may announce rows the round
            # did not see, and then the loop goes round again instead of waiting. (Rows
            # announced before it were committed before the round began.)
            wake.clear()
            try:
                more = await work()
            except Exception:
                log.exception("%s failed; retrying", what)
                await asyncio.sleep(poll_s)
                continue
            if more or wake.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await wake.wait()
    finally:
        stopping.cancel()
        with contextlib.suppress(Exception):
            await listener.remove_listener(channel, on_notify)
        await pool.release(listener)


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; its acquisition and its reset on release (a round trip that says
    nothing about the work) are not traced."""
    with suppress_instrumentation():
        conn = await pool.acquire()
    try:
        yield conn
    finally:
        with suppress_instrumentation():
            await pool.release(conn)


# What to record once the transaction in progress commits (None: outside one).
_on_commit: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "db_on_commit", default=None
)


def after_commit(record: Callable[[], None]) -> None:
    """Run `record` (a metric, typically) once the current `transaction` commits; never if it
    rolls back. Outside a transaction: now."""
    pending = _on_commit.get()
    if pending is None:
        record()
    else:
        pending.append(record)


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction: BEGIN is not traced, COMMIT (or ROLLBACK) is.
    What `after_commit` was given inside runs after the commit."""
    async with connection(pool) as conn:
        tx = conn.transaction()
        with suppress_instrumentation():
            await tx.start()
        pending: list[Callable[[], None]] = []
        token = _on_commit.set(pending)
        try:
            yield conn
        except BaseException:
            await tx.rollback()
            raise
        finally:
            _on_commit.reset(token)
        await tx.commit()
        for record in pending:
            record()
