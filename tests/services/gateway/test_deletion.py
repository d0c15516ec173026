"""DeleteJob/DeleteImage refusals while work runs (the deletions themselves are proved against
the real servers in tests/integration/test_deletion.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pixmesh.jobs.v1 import jobs_pb2
from services.gateway.deletion import Deletion
from services.runtime.errors import FailedPrecondition


class _Running:
    """The jobs service, where the job (or the image's job) is still running."""

    async def DeleteJobs(
        self, request: jobs_pb2.DeleteJobsRequest, timeout: float
    ) -> jobs_pb2.DeleteJobsResponse:
        return jobs_pb2.DeleteJobsResponse(jobs_running=1)


async def test_a_running_job_is_not_deleted_and_the_message_says_it_is_the_job() -> None:
    """DeleteJob of a running job answered "job job_1 has jobs still running: cancel them"."""
    none: Any = None
    jobs: Any = _Running()
    deletion = Deletion(none, none, jobs, none, none)
    with pytest.raises(FailedPrecondition) as err:
        await deletion.delete_job("tenant-a", "job_1", 5.0)
    assert err.value.reason == "JOBS_RUNNING"
    assert err.value.message == "job job_1 is still running: cancel it (or wait) and delete again"
