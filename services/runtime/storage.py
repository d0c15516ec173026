"""S3 object storage (any S3 endpoint; SeaweedFS locally). boto3 is blocking: calls run in threads.

Keys are content-addressed: `inputs/<sha256>` for uploads and `outputs/<work digest>.<ext>` for
results (services/runtime/provenance.py), so a rerun of the same work finds its output. Outputs
carry their sha256 and facts in user metadata (`x-amz-meta-*`), which a HEAD returns: reusing an
output never downloads it.

One client per process, made once (clients are thread-safe; its connection pool is reused by
every call). Per-call costs that buy nothing here are turned off, each measured on the local
stack (SeaweedFS, 12 MP JPEG inputs of 2.2 MB, 40 KB outputs; bench/imaging.py):
- Flexible checksums only where an operation requires them (`when_required`): botocore's
  default computes a CRC32 of every uploaded body and of every downloaded one, about 1.2 ms of
  CPU per 2.2 MB GET on the 2-core development machine. TCP and TLS already protect the bytes in
  transit, and what the services store is checked at the edges: uploads are hashed by the
  gateway (their key is their SHA-256) and outputs carry their SHA-256 in the job.
- Response timestamps (LastModified, Expires) stay strings instead of being parsed into
  datetimes with dateutil: nothing here reads them, and the parse cost ~0.2 ms per call.
- HEADs, GETs, PUTs of bytes and presigned GET URLs skip the client: botocore's SigV4 query
  signer signs them directly (`QuerySigner`) and a HEAD, GET or PUT goes out on urllib3
  (`Direct`), ~0.5 ms of CPU less per HEAD (every worker task makes one), ~1.4 ms less per PUT
  of a 900 KB output (every computed output is one), ~0.9 ms less per GET of a 1.2 MB upload
  (the metadata service reads every upload) and 0.12 ms less per URL; the HEAD, GET and PUT
  only where the endpoint is plain HTTP and unproxied (`_direct`): over HTTPS the client's TLS
  settings and proxies apply. Everything else (PUTs of files, streamed reads, deletes, listings)
  goes through the client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, TypeGuard, TypeVar
from urllib.parse import quote, urlsplit

import botocore.session
import urllib3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from services.runtime.errors import NotFound, Unavailable
from services.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

T = TypeVar("T")


_INPUTS = "inputs/"


def input_key(sha256: str) -> str:
    return f"{_INPUTS}{sha256}"


def input_sha256(key: str) -> str | None:
    """The sha256 an input key names (None: not an input key)."""
    return key.removeprefix(_INPUTS) if key.startswith(_INPUTS) else None


@dataclass(frozen=True)
class ObjectHead:
    """What a HEAD tells about an object: its size, content type and user metadata."""

    size: int
    content_type: str
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class QuerySigner:
    """Signs presigned URLs with botocore's SigV4 query signer itself, skipping what the
    client's generate_presigned_url does around it per call (parameter validation and
    serialisation, endpoint rule resolution, event hooks): the imaging service signs one GET
    URL per task for its pipeline child, and sends its HEADs this way (`DirectHead`). Same URL
    shape and signature as the client's (SigV4, path-style, the key quoted as botocore quotes
    it); for a plain GET or HEAD, optionally with response-content-type."""

    endpoint: str  # scheme://host[:port], no trailing slash
    region: str
    credentials: Credentials

    def url(
        self,
        method: str,
        bucket: str,
        key: str,
        expires_s: int,
        content_type: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """`headers`: request headers to sign (the request must then send them as they are)."""
        query = "?response-content-type=" + quote(content_type, safe="") if content_type else ""
        path = f"/{quote(bucket, safe='')}/{quote(key, safe='/~')}"
        request = AWSRequest(
            method=method, url=f"{self.endpoint}{path}{query}", headers=dict(headers or {})
        )
        S3SigV4QueryAuth(self.credentials, "s3", self.region, expires=expires_s).add_auth(request)
        return str(request.url)


class Direct:
    """HEAD, GET and PUT requests as a presigned URL (QuerySigner) sent on urllib3 (the HTTP library
    under botocore), with the client's timeouts and a retry of connection errors and 429/5xx
    answers like its standard mode (3 attempts). A HEAD through the client cost ~1.1 ms of CPU,
    ~0.55 here (span included): the worker looks up every stage's outputs with one before
    anything else, a reused stage is little more than that. A PUT of a 900 KB output cost ~2.6
    ms through the client, ~1.2 here: every computed output is one; a GET of a 1.2 MB upload
    ~2.2 and ~1.3. The spans are the ones the botocore instrumentation made (`S3.HeadObject`,
    `S3.GetObject`, `S3.PutObject`, the same attributes)."""

    def __init__(self, signer: QuerySigner) -> None:
        self._signer = signer
        self._http = urllib3.PoolManager(
            maxsize=_POOL_CONNECTIONS,
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT_S, read=_READ_TIMEOUT_S),
            retries=urllib3.Retry(
                total=2,
                status_forcelist=(429, 500, 502, 503, 504),
                # All idempotent: a PUT sends the same bytes to the same key again.
                allowed_methods={"GET", "HEAD", "PUT"},
                backoff_factor=0.1,
                raise_on_status=False,
            ),
        )

    def head(self, bucket: str, key: str) -> ObjectHead | None:
        """The object's facts, None when missing (404); Unavailable on any other answer."""
        with self._span("HeadObject", bucket, key) as span:
            resp = self._send(span, "HEAD", self._signer.url("HEAD", bucket, key, _DIRECT_URL_S))
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise Unavailable(message="object storage error", reason="STORAGE_ERROR")
            headers = resp.headers
            return ObjectHead(
                size=int(headers.get("content-length", 0)),
                content_type=str(headers.get("content-type", "")),
                metadata={
                    k[len(_META) :].lower(): v
                    for k, v in headers.items()
                    if k.lower().startswith(_META)
                },
            )

    def get(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, None when missing (404); Unavailable on any other answer, or on a
        body shorter than its Content-Length (urllib3 checks it)."""
        with self._span("GetObject", bucket, key) as span:
            url = self._signer.url("GET", bucket, key, _DIRECT_URL_S)
            resp = self._send(span, "GET", url, read=True)
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise Unavailable(message="object storage error", reason="STORAGE_ERROR")
            return bytes(resp.data)

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        """Store `data` with its content type and user metadata (ASCII: `sendable`), both
        signed; Unavailable on any answer but 200."""
        headers = {"content-type": content_type}
        headers.update({_META + name.lower(): value for name, value in metadata.items()})
        with self._span("PutObject", bucket, key) as span:
            url = self._signer.url("PUT", bucket, key, _DIRECT_URL_S, headers=headers)
            resp = self._send(span, "PUT", url, body=data, headers=headers)
            if resp.status != 200:
                raise Unavailable(message="object storage error", reason="STORAGE_ERROR")

    @staticmethod
    def sendable(data: object, metadata: Mapping[str, str]) -> TypeGuard[bytes]:
        """Whether a PUT can go this way: a body in memory and ASCII metadata (what S3 takes in
        headers; the client refuses the rest with its own error)."""
        return isinstance(data, bytes) and all(
            f"{name}{value}".isascii() for name, value in metadata.items()
        )

    def _span(self, operation: str, bucket: str, key: str) -> AbstractContextManager[Span]:
        attributes = {
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": operation,
            "aws.region": self._signer.region,
            "aws.s3.bucket": bucket,
            "aws.s3.key": key,
        }
        return _tracer.start_as_current_span(
            f"S3.{operation}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def _send(self, span: Span, method: str, url: str, read: bool = False, **kwargs: Any) -> Any:
        """The answer, its connection back in the pool: its body read (`read`) or discarded."""
        try:
            # (typed upstream; mypy reads the types-urllib3 that botocore-stubs pulls in)
            resp = self._http.request(method, url, preload_content=read, **kwargs)  # type: ignore[no-untyped-call]
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(message="object storage unreachable", reason="STORAGE_ERROR") from exc
        if not read:
            resp.drain_conn()
            resp.release_conn()
        span.set_attribute("http.status_code", resp.status)
        return resp


def _direct(endpoint: str) -> bool:
    """Whether HEADs, GETs and PUTs may skip the client (Direct): a plain-HTTP endpoint (the
    in-cluster or local store) that no proxy variable applies to. Over HTTPS the client's TLS
    settings (botocore's CA bundle, AWS_CA_BUNDLE) and proxies are botocore's business, so it
    keeps them."""
    host = urlsplit(endpoint).hostname or ""
    return endpoint.startswith("http://") and not (
        urllib.request.getproxies().get("http") and not urllib.request.proxy_bypass(host)
    )


# A HEAD's, GET's or PUT's URL is used at once; its signature only has to outlive the retries.
_DIRECT_URL_S = 300
_META = "x-amz-meta-"


class Storage:
    def __init__(
        self,
        client: Any,
        bucket: str,
        presigner: Any = None,
        get_signer: QuerySigner | None = None,
        direct: Direct | None = None,
    ) -> None:
        self._s3 = client
        self.bucket = bucket
        # Signs URLs that clients use themselves (see `presigner`); the data client if None.
        self._presigner = presigner if presigner is not None else client
        # Signs GET URLs for the presigner's endpoint (see QuerySigner); None: the presigner does.
        self._get_signer = get_signer
        # Sends HEADs, GETs and PUTs of bytes to the data endpoint (see Direct); None: the client does.
        self._direct = direct

    @classmethod
    def from_settings(cls, settings: ServiceSettings, public_endpoint: str = "") -> Storage:
        """`public_endpoint`: the S3 endpoint clients reach, used only to sign URLs (default: the
        services' own, `settings.s3_endpoint`)."""
        endpoint = public_endpoint or settings.s3_endpoint
        presigner = presigner_client(settings, endpoint)
        credentials = Credentials(
            settings.s3_access_key.get_secret_value(), settings.s3_secret_key.get_secret_value()
        )
        signer = QuerySigner(endpoint.rstrip("/"), settings.s3_region, credentials)
        direct = (
            Direct(QuerySigner(settings.s3_endpoint.rstrip("/"), settings.s3_region, credentials))
            if _direct(settings.s3_endpoint)
            else None
        )
        return cls(s3_client(settings), settings.s3_bucket, presigner, signer, direct)

    async def ensure_bucket(self) -> None:
        def create() -> None:
            try:
                self._s3.head_bucket(Bucket=self.bucket)
            except ClientError:
                self._s3.create_bucket(Bucket=self.bucket)

        await self._call(create)

    async def allow_browsers(self, origins: Sequence[str]) -> None:
        """Let pages on `origins` PUT to and GET from presigned URLs (the bucket's CORS rules,
        replaced whole); other origins get no CORS headers. Best effort: an S3 that cannot store
        CORS rules only costs browsers the presigned path."""
        rules = {
            "CORSRules": [
                {
                    "AllowedOrigins": sorted(set(origins)),
                    "AllowedMethods": ["GET", "HEAD", "PUT"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag", "Content-Length", "Content-Type"],
                    "MaxAgeSeconds": 600,
                }
            ]
        }
        try:
            if origins:
                await self._call(
                    self._s3.put_bucket_cors, Bucket=self.bucket, CORSConfiguration=rules
                )
            else:
                await self._call(self._s3.delete_bucket_cors, Bucket=self.bucket)
        except (Unavailable, ClientError):
            log.warning("could not set the bucket's CORS rules", exc_info=True)

    async def put(
        self,
        key: str,
        data: bytes | IO[bytes],
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store `data` (bytes, or a seekable file at its start, sent as it is read);
        `metadata` (ASCII, 2 KB in all) comes back from `head`."""
        meta = dict(metadata or {})
        if self._direct is not None and self._direct.sendable(data, meta):
            await self._call(self._direct.put, self.bucket, key, data, content_type, meta)
            return
        await self._call(
            self._s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata=meta,
        )

    async def get(self, key: str) -> bytes:
        if self._direct is not None:
            data = await self._call(self._direct.get, self.bucket, key)
            if data is None:
                raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND")
            return data

        def read() -> bytes:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            with body:
                return bytes(body.read())

        try:
            return await self._call(read)
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND") from exc
            raise

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    async def head(self, key: str) -> ObjectHead | None:
        """The object's size, content type and user metadata (a HEAD), None when missing."""
        if self._direct is not None:
            return await self._call(self._direct.head, self.bucket, key)
        try:
            head = await self._call(self._s3.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectHead(
            size=int(head.get("ContentLength", 0)),
            content_type=str(head.get("ContentType", "")),
            metadata={str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()},
        )

    async def size(self, key: str) -> int | None:
        """The object's size in bytes (a HEAD), None when there is no such object."""
        head = await self.head(key)
        return None if head is None else head.size

    async def delete(self, key: str) -> None:
        """Delete an object; deleting a missing one is not an error (S3 semantics)."""
        try:
            await self._call(self._s3.delete_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if not _is_missing(exc):
                raise

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Delete objects in S3 DeleteObjects requests of DELETE_BATCH keys, one after the
        other: a retention pass or a tenant's deletion sends a few requests, not one per key,
        and holds one of the threads that the hot path's S3 calls share, not all of them.
        Missing keys are not an error."""
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            resp = await self._call(
                self._s3.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            failed = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if failed:
                raise Unavailable(
                    message=f"object storage refused to delete {len(failed)} objects "
                    f"(first: {failed[0].get('Key')}: {failed[0].get('Code')})",
                    reason="STORAGE_ERROR",
                )

    def chunks(self, key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        """The object's bytes in chunks, read as they are consumed (blocking: iterate it in a
        thread). For streams whose memory must not grow with the object (zip archives). A
        missing object is NOT_FOUND and a storage failure UNAVAILABLE, as for `get` (an
        archive of a lost output was INTERNAL)."""
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            with body:
                yield from body.iter_chunks(chunk_size)
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND") from exc
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc

    async def keys(self, prefix: str, limit: int = 1000) -> list[str]:
        """Keys under `prefix` (at most `limit`, in key order)."""
        resp = await self._call(
            self._s3.list_objects_v2, Bucket=self.bucket, Prefix=prefix, MaxKeys=limit
        )
        return [str(o["Key"]) for o in resp.get("Contents", [])]

    # Presigned URLs: signing is local CPU work (an HMAC, no I/O), so these are plain calls.

    def presign_put(self, key: str, size_bytes: int, expires_s: int) -> str:
        """A URL to PUT exactly `size_bytes` bytes to `key` (Content-Length is signed, so the
        client must send that header with that value)."""
        url: str = self._presigner.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentLength": size_bytes},
            ExpiresIn=expires_s,
        )
        return url

    def presign_get(self, key: str, content_type: str, expires_s: int) -> str:
        """A URL to GET `key`, answered with `content_type` as its Content-Type."""
        if self._get_signer is not None:
            return self._get_signer.url("GET", self.bucket, key, expires_s, content_type)
        params = {"Bucket": self.bucket, "Key": key}
        if content_type:
            params["ResponseContentType"] = content_type
        url: str = self._presigner.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_s
        )
        return url

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ClientError as exc:
            if _is_missing(exc):
                raise
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: ClientError | BotoCoreError) -> Unavailable:
    """A storage call that failed, not for a missing object: the service answers UNAVAILABLE."""
    if isinstance(exc, ClientError):
        return Unavailable(message="object storage error", reason="STORAGE_ERROR")
    return Unavailable(message="object storage unreachable", reason="STORAGE_ERROR")


# Keys per DeleteObjects request (S3 allows 1,000).
DELETE_BATCH = 500

_CONNECT_TIMEOUT_S = 5
_READ_TIMEOUT_S = 30
_POOL_CONNECTIONS = 32
CLIENT_CONFIG = Config(
    s3={"addressing_style": "path"},
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=_CONNECT_TIMEOUT_S,
    read_timeout=_READ_TIMEOUT_S,
    max_pool_connections=_POOL_CONNECTIONS,
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)


@functools.cache
def _session() -> botocore.session.Session:
    """The botocore session of this process's S3 clients: one, because each session loads and
    keeps its own copy of the S3 service model (four clients on four sessions took 51 MiB, on
    one 13 MiB). Its own, not botocore's default: the timestamp parser is a session-wide
    setting (a presigner never parses a response, so it does not mind). Not thread-safe:
    clients are made at start-up, on the event loop's thread."""
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return session


def s3_client(settings: ServiceSettings) -> Any:
    """The process's S3 client (see the module doc for its settings)."""
    return _session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=CLIENT_CONFIG,
    )


def presigner_client(settings: ServiceSettings, endpoint: str) -> Any:
    """A client that only signs URLs for `endpoint` (the one clients reach, which may differ from
    the services' own). SigV4, so that a presigned PUT signs its Content-Length; it never sends a
    request itself."""
    return _session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        config=CLIENT_CONFIG.merge(Config(signature_version="s3v4")),
    )


def _is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
