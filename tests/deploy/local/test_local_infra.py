"""The embedded infrastructure, for real: each server answers its own protocol's client.

Uses the session `infra` fixture (tests/conftest.py): no Envoy, no services.
"""

from __future__ import annotations

import uuid

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from botocore.exceptions import ClientError
from nats.js.api import StorageType
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from deploy.local import Stack, servers
from deploy.observability.otlp_sink import read_spans

pytestmark = pytest.mark.integration


def test_infra_started_quickly(infra: Stack) -> None:
    # The servers; the services and Envoy too when an earlier test asked for the whole `stack`.
    assert {"nats", "postgres", "valkey", "seaweedfs", "otlp-sink"} <= set(infra.pids())
    assert infra.timings["infra"] < 30


async def test_nats_jetstream(infra: Stack) -> None:
    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        name = f"TEST_{uuid.uuid4().hex[:8]}"
        await js.add_stream(name=name, subjects=[f"test.{name}"])
        ack = await js.publish(f"test.{name}", b"hello", headers={"Nats-Msg-Id": "m1"})
        dup = await js.publish(f"test.{name}", b"hello", headers={"Nats-Msg-Id": "m1"})
        assert ack.stream == name and not ack.duplicate
        assert dup.duplicate  # dedup window works: the outbox relay relies on it
        info = await js.stream_info(name)
        assert StorageType(info.config.storage) is StorageType.FILE
        await js.delete_stream(name)
    finally:
        await nc.close()


async def test_postgres_as_the_pixmesh_role(infra: Stack) -> None:
    conn = await asyncpg.connect(infra.database_url)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_user") == "pixmesh"
        assert await conn.fetchval("select current_database()") == "pixmesh"
        # The role owns the database: a service can create its own schema.
        await conn.execute("create schema if not exists deploy_test")
        await conn.execute("drop schema deploy_test")
    finally:
        await conn.close()
    servers.bootstrap_postgres(infra.ports.postgres)  # idempotent on a second `up`


async def test_valkey_ping(infra: Stack) -> None:
    client = aioredis.from_url(infra.redis_url)
    try:
        assert await client.ping()
        await client.set("deploy-test", "1", ex=10)
        assert await client.get("deploy-test") == b"1"
    finally:
        await client.aclose()


def test_s3_put_get_and_credentials(infra: Stack) -> None:
    s3 = infra.s3_client()
    key = f"tests/{uuid.uuid4().hex}"
    s3.put_object(Bucket=infra.s3_bucket, Key=key, Body=b"pixels", ContentType="image/png")
    obj = s3.get_object(Bucket=infra.s3_bucket, Key=key)
    assert obj["Body"].read() == b"pixels"
    assert obj["ContentType"] == "image/png"
    servers.ensure_bucket(s3, infra.s3_bucket)  # tolerates an existing bucket

    intruder = servers.s3_client(infra.s3_endpoint, infra.s3_access_key, "wrong-secret")
    with pytest.raises(ClientError) as info:
        intruder.get_object(Bucket=infra.s3_bucket, Key=key)
    assert info.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")


def test_otlp_sink_receives_sdk_spans(infra: Stack) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "pixmesh-deploy-test"}))
    exporter = OTLPSpanExporter(endpoint=infra.otlp_endpoint, insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("infra-check") as span:
        span.set_attribute("pixmesh.check", "otlp")
    provider.shutdown()  # flushes: Export returns after the sink wrote the line

    trace_id = f"{span.get_span_context().trace_id:032x}"
    (record,) = [r for r in read_spans(infra.trace_file) if r["trace_id"] == trace_id]
    assert record["name"] == "infra-check"
    assert record["service"] == "pixmesh-deploy-test"
    assert record["attributes"] == {"pixmesh.check": "otlp"}
