"""ListJobs pagination and filter, CancelJob, and WatchJob as an NDJSON stream over REST."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.integration import images
from tests.integration.rest import TERMINAL, Json, Rest, reason

pytestmark = pytest.mark.integration

TINY: list[Json] = [{"resize": {"width": 32, "height": 24}}, {"convert": {"format": "PNG"}}]


def nanos(rfc3339: str) -> int:
    ts = Timestamp()
    ts.FromJsonString(rfc3339)
    return ts.ToNanoseconds()


@pytest.fixture(scope="module")
def finished_jobs(rest: Rest, photo_id: str) -> list[Json]:
    """Three succeeded jobs, so a listing has at least three pages of one."""
    created = [rest.create_job(photo_id, TINY, uuid.uuid4().hex) for _ in range(3)]
    return [rest.wait_job(job["job_id"]) for job in created]


def test_pagination_walks_every_job_once(rest: Rest, finished_jobs: list[Json]) -> None:
    seen: list[Json] = []
    params: dict[str, object] = {"page_size": 1}
    for _ in range(1000):  # bounded: a token that never ends is a bug, not a hang
        page = rest.list_page(**params)
        assert len(page.get("jobs", [])) <= 1
        seen.extend(page.get("jobs", []))
        token = page.get("next_page_token")
        if not token:
            break
        params["page_token"] = token
    else:
        pytest.fail("ListJobs kept returning a next_page_token")

    ids = [j["job_id"] for j in seen]
    assert len(ids) == len(set(ids)), "a job appeared on two pages"
    assert ids == [j["job_id"] for j in rest.list_all()]  # the same as pages of 100
    assert {j["job_id"] for j in finished_jobs} <= set(ids)
    created = [nanos(j["created_at"]) for j in seen]
    assert created == sorted(created, reverse=True)  # newest first


def test_state_filter(rest: Rest, finished_jobs: list[Json], photo: bytes) -> None:
    broken = rest.upload(images.truncated_in_scan(photo))
    failed = rest.wait_job(rest.create_job(broken["image_id"], TINY, uuid.uuid4().hex)["job_id"])
    assert failed["state"] == "FAILED", failed

    succeeded_ids = {j["job_id"] for j in rest.list_all("SUCCEEDED")}
    failed_ids = {j["job_id"] for j in rest.list_all("FAILED")}
    assert {j["job_id"] for j in finished_jobs} <= succeeded_ids
    assert failed["job_id"] in failed_ids
    assert not succeeded_ids & failed_ids
    assert all(j["state"] == "SUCCEEDED" for j in rest.list_all("SUCCEEDED"))
    assert succeeded_ids | failed_ids <= {j["job_id"] for j in rest.list_all()}

    resp = rest.http.get("/v1/jobs", params={"state": "NOT_A_STATE"})
    assert resp.status_code == 400


def test_bad_page_token(rest: Rest) -> None:
    resp = rest.http.get("/v1/jobs", params={"page_token": "not-a-token"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 3
    assert reason(resp) == "BAD_PAGE_TOKEN"


def test_cancel_finished_job(rest: Rest, finished_jobs: list[Json]) -> None:
    job_id = finished_jobs[0]["job_id"]
    resp = rest.http.post(f"/v1/jobs/{job_id}:cancel", json={})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == 9  # FAILED_PRECONDITION
    assert reason(resp) == "JOB_FINISHED"
    assert rest.get_job(job_id)["state"] == "SUCCEEDED"


def test_cancel_unfinished_job(rest: Rest, photo_id: str) -> None:
    # AVIF of the 1600x1200 photo takes about a second: the cancel arrives first.
    job = rest.create_job(photo_id, [{"convert": {"format": "AVIF"}}], uuid.uuid4().hex)
    resp = rest.http.post(f"/v1/jobs/{job['job_id']}:cancel", json={})
    assert resp.status_code == 200, resp.text
    cancelled = resp.json()["job"]
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["error"]["reason"] == "CANCELLED"
    assert all(s["state"] in ("CANCELLED", "SUCCEEDED") for s in cancelled["stages"])
    # Terminal: a late result from the worker does not revive it.
    time.sleep(2.0)
    assert rest.get_job(job["job_id"])["state"] == "CANCELLED"
    # A repeated cancel (a retry whose first reply was lost) answers like the first one.
    resp = rest.http.post(f"/v1/jobs/{job['job_id']}:cancel", json={})
    assert resp.status_code == 200, resp.text
    assert resp.json()["job"]["state"] == "CANCELLED"


def watch_lines(rest: Rest, job_id: str) -> list[Json]:
    lines: list[Json] = []
    with rest.http.stream("GET", f"/v1/jobs/{job_id}:watch", timeout=30) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.strip():
                lines.append(json.loads(line))
    return lines


def test_watch_streams_ndjson_until_terminal(rest: Rest, photo_id: str) -> None:
    ops: list[Json] = [{"resize": {"width": 400, "height": 300}}, {"convert": {"format": "WEBP"}},
           {"extract_metadata": {}}]  # fmt: skip
    job = rest.create_job(photo_id, ops, uuid.uuid4().hex)

    started = time.monotonic()
    lines = watch_lines(rest, job["job_id"])  # returns when the server ends the stream
    assert time.monotonic() - started < 30

    jobs = [line["job"] for line in lines]
    assert jobs, "no NDJSON line"
    assert {j["job_id"] for j in jobs} == {job["job_id"]}
    states = [j["state"] for j in jobs]
    assert states[-1] == "SUCCEEDED", states
    assert all(s not in TERMINAL for s in states[:-1]), states
    assert jobs[-1]["outputs"][0]["width"] == 400
    # Each line is a change: progress never goes back.
    progress = [j["progress"] for j in jobs]
    assert progress == sorted(progress)


def test_watch_of_finished_job_ends_at_once(rest: Rest, finished_jobs: list[Json]) -> None:
    lines = watch_lines(rest, finished_jobs[0]["job_id"])
    assert [line["job"]["state"] for line in lines] == ["SUCCEEDED"]
