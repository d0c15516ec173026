"""Signed webhooks end to end: a job created over REST with a webhook is POSTed, signed, to a
loopback receiver once it ends (the test stack allows private addresses and retries within a
second: tests/conftest.py SERVICE_ENV); a failing receiver is retried; a bad URL is refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pixmesh.webhooks import verify
from tests.integration.rest import Json, Rest

pytestmark = pytest.mark.integration

OPS = [{"resize": {"width": 64}}]
SECRET = "whsec-test-1"


@dataclass
class Receiver:
    """A loopback HTTP server that records each POST and answers the next status in `answers`
    (200 once they run out)."""

    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def wait(self, count: int, timeout: float = 30.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.requests)} webhook requests, expected {count}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with rec.lock:
                rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = rec.answers.pop(0) if rec.answers else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pixmesh"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


def create(rest: Rest, image_id: str, webhook: Json) -> Any:
    return rest.http.post(
        "/v1/jobs", json={"image_id": image_id, "operations": OPS, "webhook": webhook}
    )


def wait_webhook(rest: Rest, job_id: str, timeout: float = 30.0) -> Json:
    deadline = time.monotonic() + timeout
    while True:
        job = rest.get_job(job_id)
        if job["webhook"]["state"] != "PENDING":
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"webhook of {job_id} still pending: {job['webhook']}")
        time.sleep(0.1)


def test_a_succeeded_job_is_posted_once_signed(
    rest: Rest, photo_id: str, receiver: Receiver
) -> None:
    resp = create(rest, photo_id, {"url": receiver.url, "secret": SECRET})
    assert resp.status_code == 200, resp.text
    created = resp.json()["job"]
    assert created["webhook"]["url"] == receiver.url
    assert "secret" not in created["webhook"]
    job = wait_webhook(rest, created["job_id"])
    assert job["state"] == "SUCCEEDED"
    assert job["webhook"]["state"] == "DELIVERED"
    assert job["webhook"]["attempts"] == 1
    assert job["webhook"]["delivered_at"]
    [(headers, body)] = receiver.wait(1)
    time.sleep(1.5)  # no second delivery follows
    assert len(receiver.requests) == 1
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "pixmesh-webhooks"
    assert verify(body, headers["pixmesh-signature"], SECRET)
    assert not verify(body, headers["pixmesh-signature"], "wrong")
    doc = json.loads(body)
    assert doc["type"] == "job.succeeded"
    assert doc["event_id"] == headers["pixmesh-event-id"]
    assert doc["job"]["job_id"] == created["job_id"]
    assert doc["job"]["state"] == "SUCCEEDED"
    assert doc["job"]["outputs"][0]["width"] == 64
    assert SECRET not in body.decode()


def test_a_failing_receiver_is_retried(rest: Rest, photo_id: str, receiver: Receiver) -> None:
    receiver.answers = [500]
    resp = create(rest, photo_id, {"url": receiver.url, "secret": SECRET})
    assert resp.status_code == 200, resp.text
    job = wait_webhook(rest, resp.json()["job"]["job_id"])
    assert job["webhook"]["state"] == "DELIVERED"
    assert job["webhook"]["attempts"] >= 2
    requests = receiver.wait(2)
    # The same event both times, each signed.
    assert len({h["pixmesh-event-id"] for h, _ in requests}) == 1
    assert all(verify(b, h["pixmesh-signature"], SECRET) for h, b in requests)


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/hook", "http://user:pw@127.0.0.1/hook", "https://x.example/" + "a" * 2050],
)
def test_a_bad_url_is_400_on_webhook_url(rest: Rest, photo_id: str, url: str) -> None:
    resp = create(rest, photo_id, {"url": url})
    assert resp.status_code == 400, resp.text
    fields = [v["field"] for d in resp.json()["details"] for v in d.get("field_violations", [])]
    assert fields == ["webhook.url"]
