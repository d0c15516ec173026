"""Dependency outages become UNAVAILABLE with a client-safe message (real drivers against a
port where nothing listens); everything else stays unclassified (INTERNAL at the interceptor)."""

from __future__ import annotations

import socket

import asyncpg
import boto3
import botocore.config
import grpc
import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.runtime.outage import as_unavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_postgres_down() -> None:
    with pytest.raises(Exception) as info:
        await asyncpg.connect(f"postgresql://x@127.0.0.1:{_closed_port()}/x", timeout=2)
    err = as_unavailable(info.value)
    assert err is not None and err.code == grpc.StatusCode.UNAVAILABLE and err.retryable
    assert err.reason == "DEPENDENCY_UNAVAILABLE" and err.retry_delay == 1.0
    assert "127.0.0.1" not in err.message and "refused" not in err.message.lower()


async def test_valkey_down() -> None:
    client = redis.Redis(port=_closed_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    with pytest.raises(Exception) as info:
        await client.get("k")
    await client.aclose()
    err = as_unavailable(info.value)
    assert err is not None and err.metadata == {"dependency": "cache"}
    assert "127.0.0.1" not in err.message and "Errno" not in err.message


def test_s3_down() -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(Exception) as info:
        s3.head_object(Bucket="b", Key="k")
    err = as_unavailable(info.value)
    assert err is not None and err.metadata == {"dependency": "object storage"}


def test_other_errors_are_not_outages() -> None:
    assert as_unavailable(ValueError("bug")) is None
    assert as_unavailable(KeyError("x")) is None
    try:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert as_unavailable(wrapped) is not None  # the cause counts
