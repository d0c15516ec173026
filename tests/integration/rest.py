"""A thin REST client over httpx for the integration tests: the calls a curl user makes, with
bounded polling. It returns the parsed JSON (snake_case proto names, enums as names, uint64 as
strings) so the tests assert on exactly what Envoy's transcoder sends."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

Json = dict[str, Any]
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class Rest:
    def __init__(self, base_url: str, api_key: str | None, timeout: float = 30.0) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def upload_response(self, data: bytes, content_type: str = "image/jpeg") -> httpx.Response:
        return self.http.post("/v1/images", content=data, headers={"content-type": content_type})

    def upload(self, data: bytes, content_type: str = "image/jpeg") -> Json:
        resp = self.upload_response(data, content_type)
        assert resp.status_code == 200, resp.text
        image: Json = resp.json()["image"]
        return image

    def create_job_response(
        self,
        image_id: str,
        operations: Sequence[Mapping[str, Any]],
        idempotency_key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        body = {"image_id": image_id, "operations": list(operations)}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        return self.http.post("/v1/jobs", json=body, headers=dict(headers or {}))

    def create_job(
        self,
        image_id: str,
        operations: Sequence[Mapping[str, Any]],
        idempotency_key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> Json:
        resp = self.create_job_response(image_id, operations, idempotency_key, headers)
        assert resp.status_code == 200, resp.text
        job: Json = resp.json()["job"]
        return job

    def get_job(self, job_id: str) -> Json:
        resp = self.http.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job: Json = resp.json()["job"]
        return job

    def wait_job(self, job_id: str, timeout: float = 30.0, interval: float = 0.1) -> Json:
        """Poll GET until the job is terminal; fail (with the last state) after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["state"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not finished after {timeout}s: {job}")
            time.sleep(interval)

    def list_page(self, **params: Any) -> Json:
        resp = self.http.get("/v1/jobs", params=params)
        assert resp.status_code == 200, resp.text
        page: Json = resp.json()
        return page

    def list_all(self, state: str | None = None) -> Iterator[Json]:
        params: dict[str, Any] = {"page_size": 100}
        if state:
            params["state"] = state
        while True:
            page = self.list_page(**params)
            yield from page.get("jobs", [])
            if not page.get("next_page_token"):
                return
            params["page_token"] = page["next_page_token"]

    def download(self, job_id: str, index: int = 0) -> httpx.Response:
        return self.http.get(f"/v1/jobs/{job_id}/outputs/{index}")


def reason(resp: httpx.Response) -> str:
    """The ErrorInfo reason of an error response (google.rpc.Status as JSON)."""
    body = resp.json()
    reasons: list[str] = [
        d["reason"]
        for d in body.get("details", [])
        if d.get("@type", "").endswith("google.rpc.ErrorInfo")
    ]
    assert reasons, f"no ErrorInfo in {body}"
    return reasons[0]


# The pipeline the REST, SDK and CLI tests share, as REST JSON.
RESIZE_WEBP_METADATA: list[Json] = [
    {"resize": {"width": 800, "height": 600, "mode": "FIT"}},
    {"convert": {"format": "WEBP"}},
    {"extract_metadata": {}},
]
