"""The webhook deliveries of jobs that ended (jobs.webhook_deliveries): claimed for an attempt,
their outcome recorded. A delivery row is written with its job (the repository's create) and
made due when the job ends (its save, which NOTIFYs `WEBHOOK_CHANNEL`); the loop that attempts
them is JobsService.deliver_webhooks, the POST itself services/jobs/webhooks.py."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.runtime.db import connection
from services.runtime.secrets import SecretBox

# NOTIFYed when a job with a webhook ends: its delivery is due.
WEBHOOK_CHANNEL = "jobs_webhooks"


@dataclass(frozen=True)
class WebhookDelivery:
    """A claimed delivery attempt: `attempt` is its number (1-based), already counted."""

    job_id: str
    tenant_id: str
    url: str
    secret: str | None
    event_id: str
    attempt: int


# Claims due deliveries: locked (skipping rows another replica holds), their attempt counted and
# leased by moving next_attempt_at past the attempt's timeout, in one statement. A replica that
# dies mid-attempt leaves the row due again once the lease ends.
_CLAIM = """UPDATE jobs.webhook_deliveries d
    SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
    FROM (SELECT job_id FROM jobs.webhook_deliveries
          WHERE state = 'PENDING' AND next_attempt_at <= now()
          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due, jobs.jobs j
    WHERE d.job_id = due.job_id AND j.job_id = d.job_id
    RETURNING d.job_id, j.tenant_id, d.url, d.secret, d.event_id, d.attempts"""

# An attempt's outcome: $3 NULL is a 2xx (DELIVERED); else the error, retried in $4 seconds, or
# FAILED when $4 is NULL. Only the attempt that holds the claim writes (a re-run job that ended
# again restarted the count).
_RECORD = """UPDATE jobs.webhook_deliveries SET
        state = CASE WHEN $3::text IS NULL THEN 'DELIVERED'
                     WHEN $4::float8 IS NULL THEN 'FAILED' ELSE 'PENDING' END,
        last_error = $3,
        delivered_at = CASE WHEN $3::text IS NULL THEN now() END,
        next_attempt_at = CASE WHEN $3::text IS NOT NULL AND $4::float8 IS NOT NULL
                               THEN now() + make_interval(secs => $4) END
    WHERE job_id = $1 AND attempts = $2 AND state = 'PENDING'
    RETURNING state"""


class WebhookStore:
    def __init__(self, pool: asyncpg.Pool, secrets: SecretBox | None = None) -> None:
        self.pool = pool
        # Opens the secrets the repository sealed (services/runtime/secrets.py).
        self.secrets = secrets or SecretBox(())

    async def claim(self, limit: int, lease_s: float) -> list[WebhookDelivery]:
        """Due deliveries, at most `limit`, each claimed for one attempt for `lease_s`."""
        async with connection(self.pool) as conn:
            rows = await conn.fetch(_CLAIM, limit, lease_s)
        return [
            WebhookDelivery(
                r["job_id"],
                r["tenant_id"],
                r["url"],
                self.secrets.open(r["secret"]),
                r["event_id"] or "",
                r["attempts"],
            )
            for r in rows
        ]

    async def record(
        self, job_id: str, attempt: int, error: str | None, retry_in_s: float | None
    ) -> str | None:
        """Record attempt `attempt`: delivered (`error` None), retried in `retry_in_s`, or
        FAILED (`retry_in_s` None). The new state, None when the claim was no longer held."""
        async with connection(self.pool) as conn:
            state: str | None = await conn.fetchval(_RECORD, job_id, attempt, error, retry_in_s)
        return state
