"""The job registry against a real Postgres (tests/services/jobs/conftest.py): jobs and their
stages, worker events applied exactly once, outputs, the transactional outbox, renditions."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pixmesh.common.v1 import image_pb2, job_pb2, metadata_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import statemachine as sm
from services.jobs.batches import BATCH_KEY_PREFIX
from services.jobs.outbox import Outbox, claim
from services.jobs.service import JobsService
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.pipeline import request_hash

pytestmark = pytest.mark.integration

J = job_pb2.Job
S = job_pb2.Stage
TENANT = "t-jobs"


def image() -> image_pb2.Image:
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    return image_pb2.Image(image_id=f"img_{sha[:32]}", sha256=sha, format=image_pb2.JPEG)


def resize(width: int) -> operations_pb2.Operation:
    return operations_pb2.Operation(resize=operations_pb2.Resize(width=width))


def webp() -> operations_pb2.Operation:
    return operations_pb2.Operation(convert=operations_pb2.Convert(format=image_pb2.WEBP))


def metadata_op() -> operations_pb2.Operation:
    return operations_pb2.Operation(extract_metadata=operations_pb2.ExtractMetadata())


def rendition(name: str, *ops: operations_pb2.Operation) -> operations_pb2.Rendition:
    return operations_pb2.Rendition(name=name, operations=ops)


def output(width: int) -> job_pb2.Output:
    return job_pb2.Output(
        format=image_pb2.WEBP,
        content_type="image/webp",
        width=width,
        height=width // 2,
        size_bytes=1000 + width,
        sha256=hashlib.sha256(str(width).encode()).hexdigest(),
    )


def started(job: J, idx: int, attempt: int = 1) -> events_pb2.TaskEvent:
    return events_pb2.TaskEvent(
        event_id=f"{job.job_id}.{idx}.started.{attempt}",
        task_id=f"{job.job_id}.{idx}",
        job_id=job.job_id,
        stage_index=idx,
        started=events_pb2.TaskStarted(attempt=attempt),
    )


def completed(job: J, idx: int, **fields: object) -> events_pb2.TaskEvent:
    return events_pb2.TaskEvent(
        event_id=f"{job.job_id}.{idx}.completed",
        task_id=f"{job.job_id}.{idx}",
        job_id=job.job_id,
        stage_index=idx,
        completed=events_pb2.TaskCompleted(**fields),  # type: ignore[arg-type]
    )


def failed(job: J, idx: int, reason: str = "IMAGE_CORRUPT") -> events_pb2.TaskEvent:
    return events_pb2.TaskEvent(
        event_id=f"{job.job_id}.{idx}.failed",
        task_id=f"{job.job_id}.{idx}",
        job_id=job.job_id,
        stage_index=idx,
        failed=events_pb2.TaskFailed(
            error=job_pb2.JobError(code="INVALID_ARGUMENT", reason=reason, message="bad input"),
            attempts=3,
        ),
    )


def rendition_outputs(*names: str) -> list[events_pb2.RenditionOutput]:
    return [
        events_pb2.RenditionOutput(key=f"outputs/{name}.webp", output=output(100 * (i + 1)))
        for i, name in enumerate(names)
    ]


async def outbox(pool: asyncpg.Pool, job_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT id, subject, msg_id, payload, published_at FROM jobs.outbox"
        " WHERE msg_id LIKE $1 ORDER BY id",
        f"{job_id}.%",
    )
    return rows


async def tasks(pool: asyncpg.Pool, job_id: str) -> list[events_pb2.Task]:
    return [
        events_pb2.Task.FromString(r["payload"])
        for r in await outbox(pool, job_id)
        if r["subject"].startswith("pixmesh.task.")
    ]


async def job_events(pool: asyncpg.Pool, job_id: str) -> list[events_pb2.JobStateChanged]:
    return [
        events_pb2.JobStateChanged.FromString(r["payload"])
        for r in await outbox(pool, job_id)
        if r["subject"] == f"pixmesh.event.job.{job_id}"
    ]


# ---- jobs without renditions ---------------------------------------------------------------


async def test_create_plans_stages_and_enqueues_the_first_task(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    img = image()
    ops = [resize(800), metadata_op(), webp()]
    job, created = await service.create_job(TENANT, img, ops, "", request_hash(img, ops))

    assert created
    assert job.job_id.startswith("job_") and len(job.job_id) == 36
    assert job.state == J.PENDING and job.image_id == img.image_id
    assert list(job.operations) == ops
    assert [(s.index, s.service, s.state) for s in job.stages] == [
        (0, "imaging", S.PENDING),
        (1, "metadata", S.PENDING),
        (2, "imaging", S.PENDING),
    ]
    assert [list(s.operations) for s in job.stages] == [[ops[0]], [ops[1]], [ops[2]]]
    assert not job.renditions and not job.outputs and job.progress == 0
    assert job.created_at == job.updated_at and not job.HasField("finished_at")
    assert await service.get_job(TENANT, job.job_id) == job

    rows = await outbox(pool, job.job_id)
    # The first task alone: no JobStateChanged for the creation (no one can watch the job yet).
    assert [r["subject"] for r in rows] == ["pixmesh.task.imaging"]
    assert rows[0]["msg_id"] == f"{job.job_id}.0"
    (task,) = await tasks(pool, job.job_id)
    assert task.task_id == f"{job.job_id}.0" and task.tenant_id == TENANT
    assert task.service == "imaging" and list(task.operations) == [ops[0]]
    assert task.input_key == f"inputs/{img.sha256}" and task.source == img
    assert task.deadline.ToDatetime(UTC) == job.created_at.ToDatetime(UTC) + timedelta(seconds=600)
    assert not task.renditions
    assert await job_events(pool, job.job_id) == []


async def test_events_run_the_stages_to_success(service: JobsService, pool: asyncpg.Pool) -> None:
    img = image()
    ops = [resize(800), metadata_op(), webp()]
    job, _ = await service.create_job(TENANT, img, ops, "", "h")

    await service.apply_event(started(job, 0))
    running = await service.get_job(TENANT, job.job_id)
    assert running.state == J.RUNNING and running.stages[0].state == S.RUNNING
    assert running.stages[0].attempts == 1 and running.stages[0].HasField("started_at")

    report = job_pb2.OperationReport(index=0, denoise=job_pb2.DenoiseReport(model="m"))
    await service.apply_event(
        completed(job, 0, output_key="outputs/a.png", output=output(800), reports=[report])
    )
    after_first = await service.get_job(TENANT, job.job_id)
    assert after_first.stages[0].state == S.SUCCEEDED
    assert list(after_first.stages[0].reports) == [report]
    assert after_first.progress == pytest.approx(1 / 3)
    # Metadata reads the uploaded source, never the stripped output.
    md = metadata_pb2.ImageMetadata(sha256=img.sha256, width=4000)
    await service.apply_event(started(job, 1))
    await service.apply_event(completed(job, 1, metadata=md))
    # The last stage reads the latest image made so far.
    await service.apply_event(started(job, 2))
    await service.apply_event(completed(job, 2, output_key="outputs/b.webp", output=output(400)))

    done = await service.get_job(TENANT, job.job_id)
    assert done.state == J.SUCCEEDED and done.progress == 1.0
    assert done.HasField("finished_at") and done.metadata == md
    assert [s.state for s in done.stages] == [S.SUCCEEDED] * 3
    # Inside the mesh an output has no REST path (the gateway links it: services/runtime/routes.py).
    expected = output(400)
    assert list(done.outputs) == [expected]
    assert await service.get_output(TENANT, job.job_id, 0) == (expected, "outputs/b.webp")

    sent = await tasks(pool, job.job_id)
    assert [(t.stage_index, t.service, t.input_key) for t in sent] == [
        (0, "imaging", f"inputs/{img.sha256}"),
        (1, "metadata", f"inputs/{img.sha256}"),
        (2, "imaging", "outputs/a.png"),
    ]
    events = await job_events(pool, job.job_id)
    # One per applied event (none for the creation); the last is the final state.
    assert len(events) == 6
    assert events[-1].job == done
    assert [e.job.state for e in events] == [J.RUNNING] * 5 + [J.SUCCEEDED]
    assert all(e.tenant_id == TENANT for e in events)


def task_subjects(rows: list[asyncpg.Record]) -> list[str]:
    return [r["subject"] for r in rows if r["subject"].startswith("pixmesh.task.")]


async def test_a_batchs_tasks_go_to_the_batch_lane(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    img = image()
    ops = [resize(800), metadata_op()]
    key = f"{BATCH_KEY_PREFIX}bat_x:0"  # how services/jobs/batches.py creates a batch's jobs
    job, _ = await service.create_job(
        TENANT, img, ops, key, request_hash(img, ops), batch_id="bat_x"
    )
    await service.apply_event(
        completed(job, 0, output_key="outputs/a.png", output=output(800))
    )  # the next stage is dispatched on the event path, from the stored job
    assert task_subjects(await outbox(pool, job.job_id)) == [
        "pixmesh.task.imaging.batch",
        "pixmesh.task.metadata.batch",
    ]
    # A replay (DLQ replay runs retry_failed) of a batch's job stays in the batch lane.
    await service.apply_event(failed(job, 1))
    await service.retry_failed(job.job_id)
    assert task_subjects(await outbox(pool, job.job_id))[-1] == "pixmesh.task.metadata.batch"


async def test_a_client_key_that_looks_like_a_batchs_does_not_pick_the_lane(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    img = image()
    ops = [resize(800), metadata_op()]
    # A client's CreateJob (services/jobs/api.py passes no batch_id), keyed like a batch's job.
    job, _ = await service.create_job(TENANT, img, ops, "batch:x", request_hash(img, ops))
    await service.apply_event(completed(job, 0, output_key="outputs/a.png", output=output(800)))
    await service.apply_event(failed(job, 1))
    await service.retry_failed(job.job_id)
    assert task_subjects(await outbox(pool, job.job_id)) == [
        "pixmesh.task.imaging",
        "pixmesh.task.metadata",
        "pixmesh.task.metadata",
    ]


async def test_an_event_is_applied_once(service: JobsService, pool: asyncpg.Pool) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    await service.apply_event(started(job, 0))
    done = completed(job, 0, output_key="outputs/x.webp", output=output(10))
    await service.apply_event(done)
    first = await service.get_job(TENANT, job.job_id)
    rows = await outbox(pool, job.job_id)

    await service.apply_event(done)
    await service.apply_event(started(job, 0))  # a late duplicate after success

    assert await service.get_job(TENANT, job.job_id) == first
    assert len(await outbox(pool, job.job_id)) == len(rows)


async def test_a_redelivered_task_raises_the_attempts(service: JobsService) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    await service.apply_event(started(job, 0, attempt=1))
    first = await service.get_job(TENANT, job.job_id)
    await service.apply_event(started(job, 0, attempt=2))
    again = await service.get_job(TENANT, job.job_id)
    assert again.stages[0].attempts == 2
    assert again.stages[0].started_at == first.stages[0].started_at


async def test_metadata_only_job_has_no_output(service: JobsService) -> None:
    md = metadata_pb2.ImageMetadata(width=10)
    job, _ = await service.create_job(TENANT, image(), [metadata_op()], "", "h")
    await service.apply_event(completed(job, 0, metadata=md))
    done = await service.get_job(TENANT, job.job_id)
    assert done.state == J.SUCCEEDED and not done.outputs and done.metadata == md
    with pytest.raises(NotFound) as exc:
        await service.get_output(TENANT, job.job_id, 0)
    assert exc.value.reason == "OUTPUT_NOT_FOUND"


async def test_a_failed_stage_fails_the_job_and_cancels_the_rest(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10), metadata_op()], "", "h")
    await service.apply_event(started(job, 0))
    await service.apply_event(failed(job, 0))

    got = await service.get_job(TENANT, job.job_id)
    assert got.state == J.FAILED and got.HasField("finished_at")
    assert (got.error.code, got.error.reason) == ("INVALID_ARGUMENT", "IMAGE_CORRUPT")
    assert [s.state for s in got.stages] == [S.FAILED, S.CANCELLED]
    assert got.stages[0].attempts == 3 and got.stages[0].error.reason == "IMAGE_CORRUPT"
    assert (await job_events(pool, job.job_id))[-1].job == got
    with pytest.raises(FailedPrecondition) as exc:
        await service.get_output(TENANT, job.job_id, 0)
    assert exc.value.reason == "JOB_NOT_SUCCEEDED"
    # A late completion of the failed job changes nothing.
    await service.apply_event(completed(job, 0, output_key="outputs/late.webp"))
    assert await service.get_job(TENANT, job.job_id) == got


async def test_output_before_success_is_not_ready(service: JobsService) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    with pytest.raises(FailedPrecondition) as exc:
        await service.get_output(TENANT, job.job_id, 0)
    assert exc.value.reason == "OUTPUT_NOT_READY"


async def test_other_tenants_and_unknown_jobs_are_not_found(service: JobsService) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    for tenant, job_id in (("someone-else", job.job_id), (TENANT, "job_missing")):
        for call in (service.get_job(tenant, job_id), service.get_output(tenant, job_id, 0)):
            with pytest.raises(NotFound) as exc:
                await call
            assert exc.value.reason == "JOB_NOT_FOUND"
        with pytest.raises(NotFound):
            await service.cancel_job(tenant, job_id)
    # Events of unknown jobs are dropped.
    await service.apply_event(started(J(job_id="job_missing"), 0))


async def test_cancel_is_idempotent_and_refuses_finished_jobs(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10), metadata_op()], "", "h")
    await service.apply_event(started(job, 0))
    cancelled = await service.cancel_job(TENANT, job.job_id)
    assert cancelled.state == J.CANCELLED and cancelled.error.reason == "CANCELLED"
    assert [s.state for s in cancelled.stages] == [S.CANCELLED, S.CANCELLED]
    assert await service.cancel_job(TENANT, job.job_id) == cancelled
    assert (await job_events(pool, job.job_id))[-1].job == cancelled

    done, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    await service.apply_event(completed(done, 0, output_key="outputs/x.webp"))
    with pytest.raises(FailedPrecondition) as exc:
        await service.cancel_job(TENANT, done.job_id)
    assert exc.value.reason == "JOB_FINISHED"


async def test_idempotency_key_returns_the_same_job_or_refuses_another_request(
    service: JobsService,
) -> None:
    key = uuid.uuid4().hex
    first, created = await service.create_job(TENANT, image(), [resize(10)], key, "hash-a")
    again, created_again = await service.create_job(TENANT, image(), [resize(10)], key, "hash-a")
    assert created and not created_again and again == first
    with pytest.raises(FailedPrecondition) as exc:
        await service.create_job(TENANT, image(), [resize(10)], key, "hash-b")
    assert exc.value.reason == "IDEMPOTENCY_KEY_REUSED"
    # Keys are per tenant.
    other, created_other = await service.create_job("t-other", image(), [resize(10)], key, "hash-b")
    assert created_other and other.job_id != first.job_id


async def test_list_pages_newest_first_and_filters_by_state(service: JobsService) -> None:
    tenant = f"t-list-{uuid.uuid4().hex[:8]}"
    made = [(await service.create_job(tenant, image(), [resize(10)], "", "h"))[0] for _ in range(5)]
    await service.apply_event(completed(made[1], 0, output_key="outputs/x.webp", output=output(10)))

    page, token = await service.list_jobs(tenant, 2, "", 0)
    seen = list(page)
    while token:
        page, token = await service.list_jobs(tenant, 2, token, 0)
        seen += page
    assert [j.job_id for j in seen] == [j.job_id for j in reversed(made)]
    assert seen[3] == await service.get_job(tenant, made[1].job_id)
    assert seen[3].outputs and seen[3].stages

    succeeded, token = await service.list_jobs(tenant, 10, "", J.SUCCEEDED)
    assert [j.job_id for j in succeeded] == [made[1].job_id] and token == ""


async def test_overdue_jobs_fail_with_deadline_exceeded(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10), metadata_op()], "", "h")
    await service.apply_event(started(job, 0))
    await pool.execute(
        "UPDATE jobs.jobs SET deadline = now() - interval '1 second' WHERE job_id=$1", job.job_id
    )
    assert await service.expire_overdue() >= 1
    got = await service.get_job(TENANT, job.job_id)
    assert got.state == J.FAILED and got.error.reason == "DEADLINE_EXCEEDED"
    assert [s.state for s in got.stages] == [S.CANCELLED, S.CANCELLED]
    assert (await job_events(pool, job.job_id))[-1].job == got
    assert await service.expire_overdue() == 0 or (await service.get_job(TENANT, job.job_id)) == got


async def test_retry_runs_a_failed_job_again_from_the_failed_stage(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    img = image()
    job, _ = await service.create_job(TENANT, img, [resize(10), metadata_op()], "", "h")
    await service.apply_event(completed(job, 0, output_key="outputs/a.webp", output=output(10)))
    await service.apply_event(failed(job, 1))

    retried = await service.retry_failed(job.job_id)
    assert retried.state == J.RUNNING and not retried.HasField("error")
    assert not retried.HasField("finished_at")
    assert [s.state for s in retried.stages] == [S.SUCCEEDED, S.PENDING]
    assert not retried.stages[1].HasField("error")
    assert not retried.stages[1].HasField("started_at")
    assert (await job_events(pool, job.job_id))[-1].job == retried
    task = (await tasks(pool, job.job_id))[-1]
    # A task id of its own (the first run's is spent in dedup), without reading earlier ones
    # (the outbox keeps no published rows).
    assert task.task_id.startswith(f"{job.job_id}.1.retry")
    assert task.task_id not in {t.task_id for t in (await tasks(pool, job.job_id))[:-1]}
    assert (task.stage_index, task.service, task.input_key) == (
        1,
        "metadata",
        f"inputs/{img.sha256}",
    )
    assert task.deadline.ToDatetime(UTC) > datetime.now(UTC) + timedelta(seconds=590)
    with pytest.raises(FailedPrecondition) as exc:
        await service.retry_failed(job.job_id)
    assert exc.value.reason == "JOB_NOT_FAILED"
    with pytest.raises(NotFound):
        await service.retry_failed("job_missing")


async def test_outbox_is_claimed_in_order_and_deleted_on_commit(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")

    class PublishFailed(Exception):
        pass

    # A relay that fails to publish rolls back: the rows stay unpublished, for the next claim.
    written = await outbox(pool, job.job_id)
    with pytest.raises(PublishFailed):
        async with pool.acquire() as conn, conn.transaction():
            assert await claim(conn, limit=10_000)
            raise PublishFailed
    assert await outbox(pool, job.job_id) == written

    async with pool.acquire() as conn, conn.transaction():
        batch = await claim(conn, limit=10_000)
        mine = [m for m in batch if m.msg_id.startswith(job.job_id)]
        assert [m.subject for m in mine] == ["pixmesh.task.imaging"]
        assert [m.id for m in batch] == sorted(m.id for m in batch)
        assert all(isinstance(m.headers, dict) for m in batch)
        # Claimed rows are locked: a concurrent relay skips them.
        async with pool.acquire() as other:
            assert not [m for m in await claim(other) if m.msg_id.startswith(job.job_id)]
    # Published (the relay commits after JetStream acked them all): gone.
    assert await outbox(pool, job.job_id) == []
    async with pool.acquire() as conn, conn.transaction():
        again = await claim(conn, limit=10_000)
    assert not [m for m in again if m.msg_id.startswith(job.job_id)]


# ---- renditions ----------------------------------------------------------------------------


async def test_create_with_renditions_stores_them_on_the_job_stage_and_task(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    img = image()
    branches = [rendition("thumb", resize(100)), rendition("large", resize(1600), webp())]
    job, created = await service.create_job(TENANT, img, [resize(2000)], "", "", branches)

    assert created and list(job.renditions) == branches
    (stage,) = job.stages
    assert stage.service == "imaging" and list(stage.operations) == [resize(2000)]
    assert list(stage.renditions) == branches
    assert await service.get_job(TENANT, job.job_id) == job
    (task,) = await tasks(pool, job.job_id)
    assert list(task.operations) == [resize(2000)] and list(task.renditions) == branches


async def test_renditions_after_another_service_get_their_own_imaging_stage(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    branches = [rendition("a"), rendition("b", resize(10))]
    job, _ = await service.create_job(TENANT, image(), [metadata_op()], "", "", branches)
    assert [(s.service, len(s.operations), len(s.renditions)) for s in job.stages] == [
        ("metadata", 1, 0),
        ("imaging", 0, 2),
    ]
    await service.apply_event(completed(job, 0, metadata=metadata_pb2.ImageMetadata(width=1)))
    task = (await tasks(pool, job.job_id))[-1]
    assert task.stage_index == 1 and not task.operations and list(task.renditions) == branches


async def test_rendition_outputs_become_the_jobs_outputs(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    names = ("thumb", "medium", "large")
    branches = [rendition(n, resize(100 * (i + 1))) for i, n in enumerate(names)]
    job, _ = await service.create_job(TENANT, image(), [], "", "", branches)
    assert not job.operations and not job.stages[0].operations

    await service.apply_event(started(job, 0))
    with pytest.raises(FailedPrecondition):
        await service.get_output(TENANT, job.job_id, 0)
    done = completed(job, 0, rendition_outputs=rendition_outputs(*names))
    await service.apply_event(done)

    got = await service.get_job(TENANT, job.job_id)
    assert got.state == J.SUCCEEDED and got.progress == 1.0
    assert [(o.index, o.rendition, o.download_path) for o in got.outputs] == [
        (i, n, "") for i, n in enumerate(names)
    ]
    for i, out in enumerate(got.outputs):
        expected = output(100 * (i + 1))
        expected.index = i
        expected.rendition = names[i]
        assert out == expected
        assert await service.get_output(TENANT, job.job_id, i) == (
            expected,
            f"outputs/{names[i]}.webp",
        )
    with pytest.raises(NotFound) as exc:
        await service.get_output(TENANT, job.job_id, len(names))
    assert exc.value.reason == "OUTPUT_NOT_FOUND"
    assert (await job_events(pool, job.job_id))[-1].job == got

    # The completed event again (a redelivery): nothing changes, nothing is published.
    rows = await outbox(pool, job.job_id)
    await service.apply_event(done)
    assert await service.get_job(TENANT, job.job_id) == got
    assert len(await outbox(pool, job.job_id)) == len(rows)
    # And the list shows the same job.
    listed, _ = await service.list_jobs(TENANT, 100, "", J.SUCCEEDED)
    assert got in listed


async def test_renditions_after_a_denoise_take_the_shared_images_input(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    denoise = operations_pb2.Operation(denoise=operations_pb2.Denoise(auto=True))
    job, _ = await service.create_job(
        TENANT, image(), [denoise], "", "", [rendition("a", resize(10))]
    )
    assert [s.service for s in job.stages] == ["inference", "imaging"]
    await service.apply_event(completed(job, 0, output_key="outputs/clean.png", output=output(9)))
    task = (await tasks(pool, job.job_id))[-1]
    assert task.input_key == "outputs/clean.png" and len(task.renditions) == 1
    await service.apply_event(completed(job, 1, rendition_outputs=rendition_outputs("a")))
    got = await service.get_job(TENANT, job.job_id)
    # The denoised image is not an output: the renditions are.
    assert [(o.rendition, o.width) for o in got.outputs] == [("a", 100)]
    assert (await service.get_output(TENANT, job.job_id, 0))[1] == "outputs/a.webp"


async def test_a_rendition_stage_without_its_outputs_fails_the_job(service: JobsService) -> None:
    job, _ = await service.create_job(TENANT, image(), [], "", "", [rendition("a"), rendition("b")])
    # A worker that ignored the renditions: one plain output.
    await service.apply_event(completed(job, 0, output_key="outputs/x.webp", output=output(1)))
    got = await service.get_job(TENANT, job.job_id)
    assert got.state == J.FAILED and not got.outputs
    assert (got.error.code, got.error.reason) == ("INTERNAL", "BAD_RENDITION_OUTPUTS")
    assert got.stages[0].state == S.FAILED


async def test_renditions_are_part_of_the_request_hash(service: JobsService) -> None:
    img = image()
    key = uuid.uuid4().hex
    branches = [rendition("a", resize(10))]
    first, _ = await service.create_job(TENANT, img, [resize(20)], key, "", branches)
    again, created = await service.create_job(TENANT, img, [resize(20)], key, "", branches)
    assert not created and again == first
    other = [rendition("a", resize(11))]
    with pytest.raises(FailedPrecondition) as exc:
        await service.create_job(TENANT, img, [resize(20)], key, "", other)
    assert exc.value.reason == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(FailedPrecondition):
        await service.create_job(TENANT, img, [resize(20)], key, "", [])
    assert request_hash(img, [resize(20)], branches) != request_hash(img, [resize(20)])


async def test_create_checks_operations_and_renditions(service: JobsService) -> None:
    cases: list[tuple[list[operations_pb2.Operation], list[operations_pb2.Rendition], str]] = [
        ([], [], "operations"),
        ([resize(1)], [rendition("Bad Name")], "renditions[0].name"),
        ([resize(1)], [rendition("a"), rendition("a")], "renditions[1].name"),
        ([resize(1)], [rendition(f"r{i}") for i in range(4)], "renditions"),
        ([resize(1)], [rendition("a", metadata_op())], "renditions[0].operations[0]"),
        ([operations_pb2.Operation()], [], "operations[0]"),
    ]
    for ops, branches, field in cases:
        with pytest.raises(InvalidArgument) as exc:
            await service.create_job(TENANT, image(), ops, "", "", branches)
        assert [v.field for v in exc.value.violations] == [field], (ops, branches)


async def test_jobs_without_renditions_store_none(service: JobsService, pool: asyncpg.Pool) -> None:
    job, _ = await service.create_job(TENANT, image(), [resize(10)], "", "h")
    row = await pool.fetchrow(
        "SELECT j.renditions AS job_r, s.renditions AS stage_r, s.rendition_outputs"
        " FROM jobs.jobs j JOIN jobs.stages s USING (job_id) WHERE job_id=$1",
        job.job_id,
    )
    assert row is not None and tuple(row) == (None, None, None)
    assert datetime.now(UTC) - job.created_at.ToDatetime(UTC) < timedelta(minutes=1)


# ---- concurrent events (two events of one job applied at once, e.g. by two jobs replicas) -----


async def test_an_event_that_waited_for_the_job_lock_sees_the_stages_the_other_wrote(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """The event query used to lock the job row only: a transaction that waited on it re-read the
    new job row but the old stage rows, and wrote them back (a late `started` set a finished stage
    back to RUNNING). Two events wait on a held lock, then run one after the other."""
    import asyncio

    for _ in range(6):
        job, _ = await service.create_job(TENANT, image(), [resize(10), metadata_op()], "", "h")
        await service.apply_event(started(job, 0))
        holder = await pool.acquire()
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM jobs.jobs WHERE job_id=$1 FOR UPDATE", job.job_id)
            done = asyncio.create_task(
                service.apply_event(
                    completed(job, 0, output_key="outputs/x.png", output=output(10))
                )
            )
            await asyncio.sleep(0.1)
            late = asyncio.create_task(service.apply_event(started(job, 0, attempt=2)))
            await asyncio.sleep(0.1)
            await tx.commit()
        finally:
            await pool.release(holder)
        await asyncio.gather(done, late)
        after = await service.get_job(TENANT, job.job_id)
        assert after.stages[0].state == S.SUCCEEDED
        assert after.stages[0].HasField("finished_at")
        assert after.stages[1].state == S.PENDING and after.state == J.RUNNING


async def test_an_event_saved_over_a_job_another_change_wrote_writes_nothing(
    service: JobsService, pool: asyncpg.Pool
) -> None:
    """A worker event takes no lock: its save writes only if the job row still has the version
    it read. Read, then another event lands, then the stale save: nothing is written (not the
    job, not the stages, not the event id, not a message), and applying it again reads the new
    job."""
    job, _ = await service.create_job(TENANT, image(), [resize(10), metadata_op()], "", "h")
    await service.apply_event(started(job, 0))
    late = started(job, 0, attempt=2)
    async with pool.acquire() as conn:
        stale, now, version = await service.repo.read_for_event(conn, job.job_id, late.event_id)
        assert stale is not None
        # Another change commits after the read (the stage succeeds)...
        await service.apply_event(completed(job, 0, output_key="outputs/x.png", output=output(10)))
        written = await outbox(pool, job.job_id)
        # ...so the save of what the read saw (stage 0 back to RUNNING) writes nothing.
        sm.start_stage(stale, 0, 2, now)
        out = Outbox()
        out.job_event(stale)
        assert not await service.repo.save(
            conn, stale, out, version=version, event_id=late.event_id
        )
    assert await outbox(pool, job.job_id) == written
    assert not await pool.fetchval(
        "SELECT count(*) FROM jobs.processed_events WHERE event_id = $1", late.event_id
    )
    after = await service.get_job(TENANT, job.job_id)
    assert after.stages[0].state == S.SUCCEEDED and after.stages[0].attempts == 1
    # Applied for real, it reads the job as it is: the late start leaves the stage finished
    # and is recorded, so a duplicate of it reads nothing.
    await service.apply_event(late)
    again = await service.get_job(TENANT, job.job_id)
    assert again.stages[0].state == S.SUCCEEDED and again.stages[1].state == S.PENDING
    assert await pool.fetchval(
        "SELECT count(*) FROM jobs.processed_events WHERE event_id = $1", late.event_id
    )
    async with pool.acquire() as conn:
        assert (await service.repo.read_for_event(conn, job.job_id, late.event_id))[0] is None
