"""Storage connections: S3-compatible buckets a tenant registered as batch sources and
destinations (issue 12).

A connection is checked when it is created (the bucket must answer a listing with the given
credentials), so wrong credentials or a missing bucket are refused at once with the reason, not
found out by a batch hours later. The secret access key (and session token) is sealed at rest
with the services' Fernet keys (services/runtime/secrets.py) and never leaves the service.

`Bucket` is the small S3 surface batches use: list a prefix, read an object up to a size, write
one. The platform's own bucket is a `Bucket` too (the tenant's area, `tenants/<tenant id>/`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import botocore.session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    InvalidRegionError,
    ParamValidationError,
)
from botocore.utils import (
    is_valid_endpoint_url,
    is_valid_ipv6_endpoint_url,
    validate_region_name,
)

from pixmesh.common.v1 import batch_pb2
from services.runtime import addresses
from services.runtime.errors import FailedPrecondition, NotFound, Unavailable, invalid
from services.runtime.secrets import SecretBox
from services.runtime.storage import CLIENT_CONFIG

# Keys listed per request (the S3 maximum).
LIST_PAGE = 1000


def tenant_area(tenant_id: str) -> str:
    """The prefix of a tenant's own area in the platform's bucket."""
    return f"tenants/{tenant_id}/"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Bucket:
    """A bucket (and a client that may read it); boto3 calls run in threads."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def check(self) -> None:
        """Refuse (FailedPrecondition, with the reason) a bucket these credentials cannot list."""
        try:
            await asyncio.to_thread(self.client.list_objects_v2, Bucket=self.bucket, MaxKeys=1)
        except ClientError as exc:
            raise _refused(exc, self.bucket) from exc
        except ParamValidationError as exc:
            # botocore refuses the name itself (no request was sent): the caller's error.
            raise invalid("bucket", f"{self.bucket[:100]!r} is not a valid bucket name") from exc
        except BotoCoreError as exc:
            raise FailedPrecondition(
                message=f"storage endpoint unreachable: {type(exc).__name__}",
                reason="STORAGE_UNREACHABLE",
            ) from exc

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object under `prefix`, in key order (folders' marker objects skipped)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            kwargs["MaxKeys"] = LIST_PAGE
            if token:
                kwargs["ContinuationToken"] = token
            try:
                page = await asyncio.to_thread(self.client.list_objects_v2, **kwargs)
            except ClientError as exc:
                raise _refused(exc, self.bucket) from exc
            except BotoCoreError as exc:
                raise Unavailable(message="storage unreachable", reason="STORAGE_ERROR") from exc
            for obj in page.get("Contents", []):
                key = str(obj["Key"])
                if not key.endswith("/"):
                    yield ObjectInfo(key, int(obj.get("Size", 0)))
            if not page.get("IsTruncated"):
                return
            token = str(page["NextContinuationToken"])

    async def read(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; NotFound when missing; FailedPrecondition IMAGE_TOO_LARGE past
        `max_bytes` (read no further than that)."""

        def get() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with body:
                data = bytes(body.read(max_bytes + 1))
            return data

        try:
            data = await asyncio.to_thread(get)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise NotFound(
                    message=f"{key}: object not found", reason="OBJECT_NOT_FOUND"
                ) from exc
            raise Unavailable(message="storage error", reason="STORAGE_ERROR") from exc
        except BotoCoreError as exc:
            raise Unavailable(message="storage unreachable", reason="STORAGE_ERROR") from exc
        if len(data) > max_bytes:
            raise FailedPrecondition(
                message=f"larger than the {max_bytes} bytes an input may have",
                reason="IMAGE_TOO_LARGE",
            )
        return data

    async def write(self, key: str, data: bytes, content_type: str) -> None:
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
            )
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(message="storage error", reason="STORAGE_ERROR") from exc


def _refused(exc: ClientError, bucket: str) -> FailedPrecondition:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in {"NoSuchBucket", "404", "NotFound"}:
        return FailedPrecondition(message=f"no bucket {bucket!r}", reason="BUCKET_NOT_FOUND")
    if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied"}:
        return FailedPrecondition(
            message=f"the credentials were refused for bucket {bucket!r} ({code})",
            reason="STORAGE_CREDENTIALS_REFUSED",
        )
    return FailedPrecondition(
        message=f"the bucket {bucket!r} cannot be listed ({code or 'error'})",
        reason="STORAGE_REFUSED",
    )


@dataclass(frozen=True)
class Connection:
    connection_id: str
    tenant_id: str
    name: str
    endpoint: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    session_token: str
    created_at: datetime

    def proto(self) -> batch_pb2.StorageConnection:
        msg = batch_pb2.StorageConnection(
            connection_id=self.connection_id,
            name=self.name,
            endpoint=self.endpoint,
            bucket=self.bucket,
            region=self.region,
            access_key_id=self.access_key_id,
        )
        msg.created_at.FromDatetime(self.created_at)
        return msg

    async def open(self) -> Bucket:
        """The connection's bucket; a FailedPrecondition (ENDPOINT_REFUSED) when the endpoint
        is, or now resolves to, a link-local address (checked on every use: DNS may change)."""
        why = await endpoint_refusal(self.endpoint)
        if why:
            raise FailedPrecondition(message=why, reason="ENDPOINT_REFUSED")
        return self.bucket_unchecked()

    def bucket_unchecked(self) -> Bucket:
        """The bucket without judging the endpoint (for a caller that just did)."""
        return Bucket(
            s3_client(
                self.endpoint,
                self.region,
                self.access_key_id,
                self.secret_access_key,
                self.session_token,
            ),
            self.bucket,
        )


def check_location(endpoint: str, region: str) -> None:
    """Refuse (INVALID_ARGUMENT, on its field) an endpoint or region botocore would refuse when
    the client is made or the first request sent: "https://" (no host), "http://[::1" or a port
    over 65535 were a ValueError from botocore or urllib, and the caller got 500 INTERNAL."""
    if endpoint:
        try:
            parts = urlsplit(endpoint)
            parts.port  # noqa: B018  (raises ValueError for a port out of range)
        except ValueError as exc:
            raise invalid("endpoint", f"not a URL: {exc}") from None
        valid = is_valid_endpoint_url(endpoint) or is_valid_ipv6_endpoint_url(endpoint)
        if parts.scheme not in ("http", "https") or not valid:
            raise invalid("endpoint", "an http:// or https:// URL with a valid host")
    if region:
        try:
            validate_region_name(region)
        except InvalidRegionError:
            raise invalid(
                "region", "letters, digits and '-', at most 63 (e.g. eu-west-1)"
            ) from None


# The longest a storage endpoint's host may take to resolve before it is judged.
RESOLVE_TIMEOUT_S = 2.0


async def endpoint_refusal(endpoint: str) -> str | None:
    """Why the endpoint's host may not be used (addresses.link_local), or None; "" (AWS's own
    endpoints) is fine."""
    if not endpoint:
        return None
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return None  # check_location refuses it
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return await addresses.link_local(parts.hostname, port, RESOLVE_TIMEOUT_S)


def s3_client(
    endpoint: str, region: str, access_key_id: str, secret: str, session_token: str = ""
) -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or "us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        aws_session_token=session_token or None,
        config=CLIENT_CONFIG,
    )


_COLUMNS = """connection_id, tenant_id, name, endpoint, bucket, region, access_key_id, secret,
    session_token, created_at"""


class ConnectionStore:
    def __init__(self, pool: asyncpg.Pool, secrets: SecretBox) -> None:
        self.pool = pool
        self.secrets = secrets

    async def create(
        self,
        tenant_id: str,
        name: str,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: batch_pb2.StorageCredentials,
    ) -> batch_pb2.StorageConnection:
        if not bucket:
            raise invalid("bucket", "required")
        check_location(endpoint, region)
        if why := await endpoint_refusal(endpoint):
            raise invalid("endpoint", why)
        if not credentials.access_key_id or not credentials.secret_access_key:
            raise invalid("credentials", "access_key_id and secret_access_key are required")
        conn = Connection(
            connection_id=f"conn_{uuid.uuid4().hex}",
            tenant_id=tenant_id,
            name=name or bucket,
            endpoint=endpoint,
            bucket=bucket,
            region=region,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            session_token=credentials.session_token,
            created_at=datetime.now().astimezone(),
        )
        await conn.bucket_unchecked().check()  # its endpoint was judged above
        row = await self.pool.fetchrow(
            f"""INSERT INTO jobs.storage_connections (connection_id, tenant_id, name, endpoint,
                bucket, region, access_key_id, secret, session_token)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}""",
            conn.connection_id,
            tenant_id,
            conn.name,
            endpoint,
            bucket,
            region,
            conn.access_key_id,
            self.secrets.seal(conn.secret_access_key),
            self.secrets.seal(conn.session_token or None),
        )
        assert row is not None
        return self._record(row).proto()

    async def list_connections(self, tenant_id: str) -> list[batch_pb2.StorageConnection]:
        rows = await self.pool.fetch(
            f"""SELECT {_COLUMNS} FROM jobs.storage_connections WHERE tenant_id = $1
            ORDER BY created_at, connection_id""",
            tenant_id,
        )
        return [self._record(r).proto() for r in rows]

    async def get(self, tenant_id: str, connection_id: str) -> Connection:
        row = await self.pool.fetchrow(
            f"""SELECT {_COLUMNS} FROM jobs.storage_connections
            WHERE tenant_id = $1 AND connection_id = $2""",
            tenant_id,
            connection_id,
        )
        if row is None:
            raise NotFound(
                message=f"storage connection {connection_id} not found",
                reason="CONNECTION_NOT_FOUND",
            )
        return self._record(row)

    async def delete(self, tenant_id: str, connection_id: str) -> None:
        done = await self.pool.execute(
            "DELETE FROM jobs.storage_connections WHERE tenant_id = $1 AND connection_id = $2",
            tenant_id,
            connection_id,
        )
        if done.endswith(" 0"):
            raise NotFound(
                message=f"storage connection {connection_id} not found",
                reason="CONNECTION_NOT_FOUND",
            )

    def _record(self, row: asyncpg.Record) -> Connection:
        return Connection(
            connection_id=row["connection_id"],
            tenant_id=row["tenant_id"],
            name=row["name"],
            endpoint=row["endpoint"],
            bucket=row["bucket"],
            region=row["region"],
            access_key_id=row["access_key_id"],
            secret_access_key=self.secrets.open(row["secret"]) or "",
            session_token=self.secrets.open(row["session_token"]) or "",
            created_at=row["created_at"],
        )
