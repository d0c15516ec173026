"""Webhook signatures: how pixmesh signs the POST it sends when a job ends, and how a receiver
checks it (README, "Webhooks").

The `Pixmesh-Signature` header reads `t=<unix seconds>,v1=<hex HMAC-SHA256>`, the HMAC keyed
with the webhook's secret over `f"{t}."` followed by the raw request body. A receiver verifies
the raw bytes it received (before any JSON parsing) and rejects old timestamps (replays):

    from pixmesh.webhooks import verify

    if not verify(request_body, request.headers["Pixmesh-Signature"], secret):
        return 400
"""

from __future__ import annotations

import hashlib
import hmac
import time

from pixmesh.common.v1.job_pb2 import Webhook, WebhookStatus

SIGNATURE_HEADER = "Pixmesh-Signature"
EVENT_ID_HEADER = "Pixmesh-Event-Id"
# How far a signature's timestamp may be from the receiver's clock, by default.
DEFAULT_TOLERANCE_S = 300

# What create_job(webhook=...) takes: a URL, or a Webhook(url=..., secret=...).
WebhookLike = str | Webhook

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "Webhook",
    "WebhookLike",
    "WebhookStatus",
    "sign",
    "to_webhook",
    "verify",
]


def to_webhook(value: WebhookLike | None) -> Webhook | None:
    """A Webhook message from a URL or a Webhook (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return Webhook(url=value)
    if isinstance(value, Webhook):
        return value
    raise TypeError(f"webhook must be a URL or a Webhook, not {type(value).__name__}")


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Pixmesh-Signature` header value for `body`, timestamped now unless given."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(body, secret, t)}"


def verify(
    body: bytes,
    header: str,
    secret: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> bool:
    """True when `header` (the `Pixmesh-Signature` value) signs exactly `body` with `secret` and
    its timestamp is within `tolerance_s` of now. Any `v1=` entry may match (a header can carry
    several, e.g. while keys rotate); the comparison is constant-time. A malformed header is
    False, never an exception."""
    if not header or not secret:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(body, secret, timestamp)
    matched = False
    for candidate in signatures:
        # Every candidate is compared (no early exit) so timing says nothing about which.
        matched |= hmac.compare_digest(expected, candidate)
    return matched
