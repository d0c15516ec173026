"""Service tokens: verified ones are kept until their own expiry, never past it, and only under
the secret they were verified with."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from services.runtime import trust
from services.runtime.errors import Unauthenticated

SECRET = "a" * 32


def _token(secret: str = SECRET, exp: float | None = None) -> str:
    claims = {"sub": "gateway", "aud": trust.AUDIENCE, "exp": int(exp or time.time() + 300)}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT was asked to decode (the cache emptied first)."""
    trust._VERIFIED.clear()
    seen: list[str] = []
    decode = jwt.decode

    def counted(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(trust.jwt, "decode", counted)
    return seen


def test_a_verified_token_is_not_decoded_again(decodes: list[str]) -> None:
    token = _token()
    assert trust.verify(SECRET, token)["sub"] == "gateway"
    claims = trust.verify(SECRET, token)
    assert claims["sub"] == "gateway" and decodes == [token]
    claims["adm"] = True  # a caller's copy: the cached claims stay as verified
    assert "adm" not in trust.verify(SECRET, token)


def test_a_cached_token_is_refused_once_it_expires(decodes: list[str]) -> None:
    exp = int(time.time()) + 1
    token = _token(exp=exp)
    trust.verify(SECRET, token)
    while time.time() <= exp + 0.05:
        time.sleep(0.1)
    with pytest.raises(Unauthenticated) as err:
        trust.verify(SECRET, token)
    assert err.value.reason == "SERVICE_TOKEN_INVALID"
    assert decodes == [token, token]


def test_a_token_holds_only_under_the_secret_that_signed_it(decodes: list[str]) -> None:
    token = _token()
    trust.verify(SECRET, token)
    with pytest.raises(Unauthenticated):  # the deployment's secret changed
        trust.verify("b" * 32, token)
    forged = _token(secret="c" * 32)
    for _ in range(2):  # refusals are not kept: each is checked again
        with pytest.raises(Unauthenticated):
            trust.verify(SECRET, forged)
    assert decodes == [token, token, forged, forged]
