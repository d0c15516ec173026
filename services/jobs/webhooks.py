"""Webhook delivery: the signed POST of a job that ended, and the retry schedule. The loop that
claims due deliveries and records their outcome is JobsService.deliver_webhooks."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from google.protobuf import json_format

from pixmesh.common.v1 import job_pb2
from pixmesh.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from services.runtime.addresses import public_address
from services.runtime.routes import link_outputs

USER_AGENT = "pixmesh-webhooks"
_EVENT_TYPES = {
    job_pb2.Job.SUCCEEDED: "job.succeeded",
    job_pb2.Job.FAILED: "job.failed",
    job_pb2.Job.CANCELLED: "job.cancelled",
}


@dataclass(frozen=True)
class WebhookPolicy:
    """The deployment's webhook settings (services/jobs/settings.py)."""

    secret: str | None = None
    max_attempts: int = 8
    timeout_s: float = 10.0
    backoff_s: float = 10.0
    backoff_max_s: float = 3600.0
    # Private, loopback and link-local receivers allowed (local stacks, tests).
    allow_private: bool = False


def backoff_s(
    attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random
) -> float:
    """The delay after failed attempt number `attempt` (1-based): base * 2^(attempt-1), capped
    at `max_s`, half of it fixed and half random ("equal jitter": receivers that failed together
    are not retried together, and the delay never collapses to zero)."""
    delay = min(max_s, base_s * 2.0 ** max(0, attempt - 1))
    return delay / 2 + delay / 2 * rand()


async def checked_address(
    url: str, allow_private: bool = False, timeout_s: float = 3.0
) -> tuple[str | None, str | None]:
    """(why the jobs service will not call `url`, None) or (None, the address to connect to).

    The host is resolved once, here: every address it has must be public, and the POST then
    connects to the first one checked, not to whatever a second resolution would give (DNS
    rebinding). The gateway checked the URL at CreateJob too; this catches DNS that changed
    since. `allow_private` (local stacks, tests): no check, no pinning."""
    if allow_private:
        return None, None  # local stacks and tests: no check, and httpx resolves as usual
    parts = urlsplit(url)
    return await public_address(parts.hostname or "", parts.port or 443, timeout_s)


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """`url` with its host replaced by `address`, the Host header it needs, and (https) the TLS
    server name, so the certificate is still checked against the host name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    at = f"[{address}]" if ":" in address else address
    netloc = at + (f":{parts.port}" if parts.port else "")
    headers = {"Host": host + (f":{parts.port}" if parts.port else "")}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), headers, extensions


def event_type(job: job_pb2.Job) -> str:
    return _EVENT_TYPES.get(job.state, "job.updated")


def payload(event_id: str, job: job_pb2.Job) -> bytes:
    """The POST body: the event's id and type and the job as REST returns it (proto3 JSON, proto
    field names, every field printed; its outputs' download paths set)."""
    rest = job_pb2.Job()
    rest.CopyFrom(job)
    doc = {
        "event_id": event_id,
        "type": event_type(job),
        "job": json_format.MessageToDict(
            link_outputs(rest),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        ),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def headers(
    event_id: str, body: bytes, secret: str | None, now: float | None = None
) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: event_id,
    }
    if secret:
        out[SIGNATURE_HEADER] = sign(body, secret, int(time.time() if now is None else now))
    return out


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    hdrs: dict[str, str],
    timeout_s: float,
    address: str | None = None,
) -> tuple[int | None, str | None]:
    """POST once, to `address` when given (see `checked_address`); (status, None) on a 2xx,
    else (status or None, why it failed). Redirects are not followed (a 3xx is a failure)."""
    extensions: dict[str, str] = {}
    if address is not None:
        url, host, extensions = pinned(url, address)
        hdrs = {**hdrs, **host}
    try:
        resp = await client.post(
            url,
            content=body,
            headers=hdrs,
            timeout=timeout_s,
            follow_redirects=False,
            extensions=extensions,
        )
    except httpx.TimeoutException:
        return None, f"timeout after {timeout_s:g} s"
    except httpx.ConnectError as exc:
        return None, f"connection failed: {exc}"[:500]
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= resp.status_code < 300:
        return resp.status_code, None
    return resp.status_code, f"HTTP {resp.status_code}"
