"""Service-to-service trust: signed, short-lived service tokens on every internal gRPC call.

Every service of a deployment shares one signing key (PIXMESH_SERVICE_TOKEN_SECRET; `make up`
generates one per stack, Kubernetes mounts it from a Secret). A service's channels attach a JWT
(HS256, PyJWT) naming the caller, valid `TOKEN_TTL_S`, re-minted before it expires; every server
refuses a call without a valid one (UNAUTHENTICATED, reason SERVICE_TOKEN_INVALID), except the
edge's public API (the gateway, which authenticates API keys itself), health and reflection. So
`tenant_id` fields inside the mesh come only from callers that hold the key, and the gateway is
the only service that turns an API key into a tenant.

An `admin` token (minted by an operator: `python -m services.runtime.trust mint --admin`) is
what model management (inference LoadModel/UnloadModel) requires: `require_admin`.

Without a secret, nothing is signed or checked (unit tests building apps in process); a service
started that way logs a warning.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import jwt
from cachetools import TLRUCache

from services.runtime.errors import PermissionDenied, ServiceError, Unauthenticated
from services.runtime.handlers import rewrap

log = logging.getLogger(__name__)

HEADER = "x-pixmesh-service-token"
AUDIENCE = "pixmesh-mesh"
TOKEN_TTL_S = 300
REFRESH_BEFORE_S = 60
# Always callable without a token: load balancers' health checks, grpcurl's describe.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


class Minter:
    """Mints (and caches) this process's token."""

    def __init__(self, secret: str, caller: str, admin: bool = False) -> None:
        self.secret = secret
        self.caller = caller
        self.admin = admin
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        now = time.time()
        if now > self._expires - REFRESH_BEFORE_S:
            self._expires = now + TOKEN_TTL_S
            claims = {"sub": self.caller, "aud": AUDIENCE, "exp": int(self._expires)}
            if self.admin:
                claims["adm"] = True
            self._token = jwt.encode(claims, self.secret, algorithm="HS256")
        return self._token


def _until_expiry(key: tuple[str, str], claims: dict[str, Any], now: float) -> float:
    return float(claims["exp"])


# Tokens that verified, until each one's own expiry (time.time, as PyJWT checks `exp`). A server
# sees few distinct tokens: one per calling process, renewed every TOKEN_TTL_S - REFRESH_BEFORE_S
# seconds, so decoding each call's token and checking its HMAC again (~56 us) is work done twice.
# Service tokens have no revocation besides the secret, which is part of the key. Only valid
# tokens are kept, so a caller cannot fill the cache without the secret.
_VERIFIED: TLRUCache[tuple[str, str], dict[str, Any]] = TLRUCache(
    maxsize=256, ttu=_until_expiry, timer=time.time
)


def verify(secret: str, token: str | None) -> dict[str, Any]:
    """The token's claims (a copy); UNAUTHENTICATED if it is missing, forged or expired."""
    if not token:
        raise Unauthenticated(
            message="internal service: calls need a service token", reason="SERVICE_TOKEN_MISSING"
        )
    cached = _VERIFIED.get((secret, token))
    if cached is not None:
        return dict(cached)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], audience=AUDIENCE, options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        raise Unauthenticated(
            message="invalid or expired service token", reason="SERVICE_TOKEN_INVALID"
        ) from None
    _VERIFIED[(secret, token)] = claims
    return dict(claims)


# ---- process-wide configuration (set once by runtime.server.serve) ------------------------------

_secret = ""
_minter: Minter | None = None


def configure(secret: str, caller: str) -> None:
    global _secret, _minter
    _secret = secret
    _minter = Minter(secret, caller) if secret else None
    if not secret:
        log.warning("PIXMESH_SERVICE_TOKEN_SECRET is not set: internal calls are not authenticated")


def _token_of(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == HEADER:
            return value if isinstance(value, str) else value.decode()
    return None


def require_admin(context: grpc.aio.ServicerContext) -> None:
    """PERMISSION_DENIED unless the call carries an admin service token (when trust is on)."""
    if not _secret:
        return
    claims = verify(_secret, _token_of(context.invocation_metadata()))
    if not claims.get("adm"):
        raise PermissionDenied(
            message="needs an operator's admin service token", reason="ADMIN_TOKEN_REQUIRED"
        )


# ---- client side ------------------------------------------------------------------------------


def _with_token(
    details: grpc.aio.ClientCallDetails, minter: Minter | None
) -> grpc.aio.ClientCallDetails:
    minter = minter or _minter
    if minter is None:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(HEADER, minter.token())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _Signing:
    def __init__(self, minter: Minter | None) -> None:
        self.minter = minter


class _UnaryUnary(_Signing, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_token(details, self.minter), request)


class _UnaryStream(_Signing, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_with_token(details, self.minter), request)


class _StreamUnary(_Signing, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(_with_token(details, self.minter), requests)


class _StreamStream(_Signing, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, requests: Any
    ) -> Any:
        return await continuation(_with_token(details, self.minter), requests)


def client_interceptors(minter: Minter | None = None) -> list[grpc.aio.ClientInterceptor]:
    """Attach a service token to every call of a channel: `minter`'s, else this process's."""
    return [_UnaryUnary(minter), _UnaryStream(minter), _StreamUnary(minter), _StreamStream(minter)]


# ---- server side ------------------------------------------------------------------------------

Abort = Callable[[grpc.aio.ServicerContext, ServiceError], Any]


class TrustInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls to this server's non-public services without a valid service token."""

    def __init__(self, public: frozenset[str], abort: Abort) -> None:
        self.open = OPEN_SERVICES | public
        self.abort = abort

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        service = details.method.split("/")[1] if details.method.count("/") >= 2 else ""
        if handler is None or not _secret or service in self.open:
            return handler
        try:
            verify(_secret, _token_of(details.invocation_metadata))
        except ServiceError as err:
            return _refusal(handler, err, self.abort)
        return handler


def _refusal(handler: grpc.RpcMethodHandler, err: ServiceError, abort: Abort) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, err)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, err)
        yield  # pragma: no cover - a generator, never resumed after the abort

    return rewrap(handler, lambda _: unary, lambda _: stream)


def main(argv: list[str] | None = None) -> None:
    """Mint a token for an operator (grpcurl -H 'x-pixmesh-service-token: <token>' ...)."""
    from services.runtime.settings import ServiceSettings

    parser = argparse.ArgumentParser(prog="python -m services.runtime.trust")
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="print a service token (PIXMESH_SERVICE_TOKEN_SECRET)")
    mint.add_argument("--caller", default="operator")
    mint.add_argument("--admin", action="store_true", help="may load and unload models")
    args = parser.parse_args(argv)
    secret = ServiceSettings().service_token_secret.get_secret_value()
    if not secret:
        parser.error("PIXMESH_SERVICE_TOKEN_SECRET is not set")
    print(Minter(secret, args.caller, args.admin).token())


if __name__ == "__main__":
    main()
