"""A dependency outage seen as an exception, turned into UNAVAILABLE (HTTP 503; the SDK retries).

Without this, a driver's own exception (Postgres restarting, Valkey refusing connections, NATS
reconnecting, S3 unreachable) reached the error interceptor as an unexpected error and answered
INTERNAL (HTTP 500), which tells clients not to retry. The client sees only which kind of
dependency failed; the driver's text stays in the log.
"""

from __future__ import annotations

import asyncpg
import botocore.exceptions
import nats.errors
import nats.js.errors
import redis.exceptions

from services.runtime.errors import Unavailable

# Seconds a client is told to wait before retrying.
RETRY_DELAY_S = 1.0

_POSTGRES: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # connection failures, rejections
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,  # e.g. a pool or connection closed under the query
)
_VALKEY: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
_NATS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.errors.FlushTimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
_S3: tuple[type[BaseException], ...] = (
    botocore.exceptions.ConnectionError,  # endpoint connection, connect timeout, closed
    botocore.exceptions.HTTPClientError,  # read timeouts and other transport failures
)
_S3_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503"}


def _kind(exc: BaseException) -> str | None:
    if isinstance(exc, _POSTGRES):
        return "database"
    if isinstance(exc, _VALKEY):
        return "cache"
    if isinstance(exc, _NATS):
        return "message bus"
    if isinstance(exc, _S3):
        return "object storage"
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if error.get("Code") in _S3_UNAVAILABLE_CODES or status >= 500:
            return "object storage"
    if isinstance(exc, ConnectionError):  # OSError family: refused, reset, aborted
        return "a dependency"
    return None


def as_unavailable(exc: BaseException) -> Unavailable | None:
    """UNAVAILABLE for an exception (or its cause/context, two levels) that means a dependency
    is down; None for anything else."""
    seen: BaseException | None = exc
    for _ in range(3):
        if seen is None:
            break
        kind = _kind(seen)
        if kind is not None:
            return Unavailable(
                message=f"{kind} temporarily unavailable; retry shortly",
                reason="DEPENDENCY_UNAVAILABLE",
                metadata={"dependency": kind},
                retry_delay=RETRY_DELAY_S,
            )
        seen = seen.__cause__ or seen.__context__
    return None
