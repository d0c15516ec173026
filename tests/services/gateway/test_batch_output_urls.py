"""ListBatchJobs with output_urls: a presigned GET URL on every listed output, its key found in
the batch's archive entries (one ListArchiveEntries a page), or asked of the jobs service for an
item the feeder had not settled yet (GetOutput)."""

from __future__ import annotations

from typing import Any

from pixmesh.common.v1 import batch_pb2, job_pb2
from pixmesh.gateway.v1 import batches_pb2 as gw
from pixmesh.jobs.v1 import batches_pb2 as jb
from pixmesh.jobs.v1 import jobs_pb2
from services.gateway.batches import BatchRequests
from services.gateway.settings import GatewaySettings


def _output(index: int, sha: str) -> job_pb2.Output:
    return job_pb2.Output(index=index, sha256=sha, content_type="image/webp", size_bytes=10)


class Jobs:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def ListBatchJobs(self, req: jb.ListBatchJobsRequest, timeout: float) -> Any:
        self.calls.append("ListBatchJobs")
        settled = batch_pb2.BatchItem(index=0, job_id="job_a", state=job_pb2.Job.SUCCEEDED)
        settled.outputs.extend([_output(0, "s0"), _output(1, "s1")])
        unsettled = batch_pb2.BatchItem(index=1, job_id="job_b", state=job_pb2.Job.SUCCEEDED)
        unsettled.outputs.append(_output(0, "s2"))
        running = batch_pb2.BatchItem(index=2, job_id="job_c", state=job_pb2.Job.RUNNING)
        return jb.ListBatchJobsResponse(items=[settled, unsettled, running])

    async def ListArchiveEntries(self, req: jb.ListArchiveEntriesRequest, timeout: float) -> Any:
        self.calls.append(f"ListArchiveEntries {req.tenant_id} {req.batch_id}")
        return jb.ListArchiveEntriesResponse(
            entries=[
                batch_pb2.ArchiveEntry(name="a/thumb.webp", key="outputs/k0.webp", sha256="s0"),
                batch_pb2.ArchiveEntry(name="a/large.webp", key="outputs/k1.webp", sha256="s1"),
            ]
        )

    async def GetOutput(self, req: jobs_pb2.GetOutputRequest, timeout: float) -> Any:
        self.calls.append(f"GetOutput {req.tenant_id} {req.job_id} {req.index}")
        return jobs_pb2.GetOutputResponse(output=_output(req.index, "s2"), key="outputs/k2.webp")


class Storage:
    def presign_get(self, key: str, content_type: str, expires_s: int) -> str:
        return f"http://s3/{key}?type={content_type}&expires={expires_s}"


def _requests(jobs: Jobs) -> BatchRequests:
    settings = GatewaySettings(download_url_ttl_s=600)
    return BatchRequests(settings, None, jobs, None, Storage(), {})  # type: ignore[arg-type]


async def test_every_listed_output_gets_a_url_when_asked() -> None:
    jobs = Jobs()
    req = gw.ListBatchJobsRequest(batch_id="bat_1", output_urls=True)
    resp = await _requests(jobs).list_batch_jobs("t1", req, 5.0)
    urls = [[o.download_url for o in item.outputs] for item in resp.items]
    assert urls == [
        [
            "http://s3/outputs/k0.webp?type=image/webp&expires=600",
            "http://s3/outputs/k1.webp?type=image/webp&expires=600",
        ],
        ["http://s3/outputs/k2.webp?type=image/webp&expires=600"],
        [],
    ]
    # One read of the batch's entries; a lookup only for the output it did not name.
    assert jobs.calls == ["ListBatchJobs", "ListArchiveEntries t1 bat_1", "GetOutput t1 job_b 0"]
    assert resp.items[0].outputs[0].download_path == "/v1/jobs/job_a/outputs/0"


async def test_no_url_and_no_lookup_unless_asked() -> None:
    jobs = Jobs()
    resp = await _requests(jobs).list_batch_jobs("t1", gw.ListBatchJobsRequest(batch_id="b"), 5.0)
    assert not any(o.download_url for item in resp.items for o in item.outputs)
    assert jobs.calls == ["ListBatchJobs"]
