"""The checks on a CreateJob's webhook before the jobs service stores it (README, "Webhooks").

The URL must be https:// (http:// only where PIXMESH_WEBHOOK_ALLOW_PRIVATE allows private
addresses too), at most 2048 characters, without credentials, and its host must resolve to
public addresses only: a webhook must not make the jobs service call into the deployment's own
network (SSRF). A bad URL is INVALID_ARGUMENT on `webhook.url`, reason BAD_WEBHOOK_URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pixmesh.common.v1 import job_pb2
from services.runtime.addresses import is_public, public_address
from services.runtime.errors import invalid

__all__ = ["check_url_syntax", "check_webhook", "is_public"]

MAX_URL_CHARS = 2048
MAX_SECRET_BYTES = 256
BAD_URL = "BAD_WEBHOOK_URL"
BAD_SECRET = "BAD_WEBHOOK_SECRET"
# The longest the gateway waits for the host's addresses.
RESOLVE_TIMEOUT_S = 3.0


def _bad(description: str) -> Exception:
    return invalid("webhook.url", description, reason=BAD_URL)


def check_url_syntax(url: str, allow_private: bool) -> tuple[str, int]:
    """The URL's host and port, or INVALID_ARGUMENT. Resolution is `check_webhook`'s."""
    if not url:
        raise _bad("required")
    if len(url) > MAX_URL_CHARS:
        raise _bad(f"at most {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise _bad("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and allow_private):
        raise _bad("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise _bad("must not contain credentials")
    host = parts.hostname
    if not host:
        raise _bad("has no host")
    return host, port or (443 if scheme == "https" else 80)


async def check_webhook(
    webhook: job_pb2.Webhook, allow_private: bool, timeout: float = RESOLVE_TIMEOUT_S
) -> None:
    """Raise INVALID_ARGUMENT unless the jobs service may call this webhook."""
    if len(webhook.secret.encode()) > MAX_SECRET_BYTES:
        raise invalid("webhook.secret", f"at most {MAX_SECRET_BYTES} bytes", reason=BAD_SECRET)
    host, port = check_url_syntax(webhook.url, allow_private)
    if allow_private:
        return
    refused, _ = await public_address(host, port, min(timeout, RESOLVE_TIMEOUT_S))
    if refused is not None:
        raise _bad(refused)
