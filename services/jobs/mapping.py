"""Protobuf <-> the job registry's records (services/jobs/statemachine.py): the one place that
reads inside their payload columns (serialised protobuf; the rules never do).

One output shape: whatever a stage made is a list of `RenditionOutput`s; a plain job's is one
unnamed image (`stage_results`), so outputs, downloads and deletion read both the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from pixmesh.common.v1 import image_pb2, job_pb2, operations_pb2
from pixmesh.events.v1 import events_pb2
from services.jobs import statemachine as sm
from services.runtime.lanes import BATCH_LANE, INTERACTIVE
from services.runtime.pipeline import plan_stages
from services.runtime.storage import input_key

_OPEN_AND_TERMINAL = sm.TERMINAL | {sm.PENDING, sm.RUNNING}
_JOB_STATES = {name: job_pb2.Job.State.Value(name) for name in _OPEN_AND_TERMINAL}
_STAGE_STATES = {name: job_pb2.Stage.State.Value(name) for name in _OPEN_AND_TERMINAL}


def ops_blob(ops: Sequence[operations_pb2.Operation]) -> bytes:
    return job_pb2.Job(operations=ops).SerializeToString()


def new_job(
    tenant_id: str,
    image: image_pb2.Image,
    ops: Sequence[operations_pb2.Operation],
    renditions: Sequence[operations_pb2.Rendition],
    webhook: job_pb2.Webhook | None,
    *,
    idempotency_key: str,
    req_hash: str,
    now: datetime,
    deadline: datetime,
    recompute: bool,
    batch_id: str | None = None,
) -> sm.JobRecord:
    """The records of a job to create: PENDING, its stages planned, stage 0 reading the upload."""
    stages = [
        sm.StageRecord(
            idx=i,
            service=st.service,
            operations=ops_blob(st.operations),
            input_key=input_key(image.sha256) if i == 0 else None,
            renditions=job_pb2.Stage(renditions=st.renditions).SerializeToString()
            if st.renditions
            else None,
            rendition_count=len(st.renditions),
        )
        for i, st in enumerate(plan_stages(ops, renditions))
    ]
    return sm.JobRecord(
        job_id=f"job_{uuid.uuid4().hex}",
        tenant_id=tenant_id,
        image_id=image.image_id,
        state=sm.PENDING,
        operations=ops_blob(ops),
        source=image.SerializeToString(),
        deadline=deadline,
        created_at=now,
        updated_at=now,
        stages=stages,
        idempotency_key=idempotency_key or None,
        request_hash=req_hash,
        renditions=job_pb2.Job(renditions=renditions).SerializeToString() if renditions else None,
        webhook=sm.WebhookRecord(webhook.url, "PENDING", 0) if webhook else None,
        recompute=recompute,
        batch_id=batch_id,
    )


def rendition_count(renditions: bytes | None) -> int:
    """How many renditions a stage's `renditions` column names."""
    return len(job_pb2.Stage.FromString(renditions).renditions) if renditions else 0


def source_key(job: sm.JobRecord) -> str:
    """The object key of the job's uploaded source."""
    return input_key(image_pb2.Image.FromString(job.source).sha256)


def completion(done: events_pb2.TaskCompleted) -> sm.Completion:
    return sm.Completion(
        output_key=done.output_key or None,
        output=done.output.SerializeToString() if done.HasField("output") else None,
        reports=job_pb2.Stage(reports=done.reports).SerializeToString() if done.reports else None,
        metadata=done.metadata.SerializeToString() if done.HasField("metadata") else None,
        rendition_outputs=events_pb2.TaskCompleted(
            rendition_outputs=done.rendition_outputs
        ).SerializeToString()
        if done.rendition_outputs
        else None,
        rendition_output_count=len(done.rendition_outputs),
        attempt=done.attempt,
    )


def lane(job: sm.JobRecord) -> str:
    """The lane of a job's tasks (services/runtime/lanes.py): the batch lane for a job the batch
    feeder created (its stored `batch_id`), else interactive. Never read from the idempotency
    key, which a client chooses."""
    return BATCH_LANE if job.batch_id else INTERACTIVE


def task(job: sm.JobRecord, idx: int, suffix: str = "") -> events_pb2.Task:
    """The task of stage `idx`; `suffix` makes a replay's task id new."""
    stage = job.stages[idx]
    msg = events_pb2.Task(
        task_id=f"{job.job_id}.{idx}{suffix}",
        job_id=job.job_id,
        tenant_id=job.tenant_id,
        stage_index=idx,
        service=stage.service,
        input_key=stage.input_key or "",
        recompute=job.recompute,
    )
    msg.operations.extend(job_pb2.Job.FromString(stage.operations).operations)
    msg.source.MergeFromString(job.source)
    if stage.renditions:
        msg.renditions.extend(job_pb2.Stage.FromString(stage.renditions).renditions)
    msg.deadline.FromDatetime(job.deadline)
    return msg


def job_proto(rec: sm.JobRecord, job: job_pb2.Job | None = None) -> job_pb2.Job:
    """The API's view of a job, built into `job` (a new message when None)."""
    if job is None:
        job = job_pb2.Job()
    job.job_id = rec.job_id
    job.image_id = rec.image_id
    job.state = _JOB_STATES[rec.state]
    # The payload columns are serialized Job/Stage messages holding just their field.
    job.MergeFromString(rec.operations)
    if rec.renditions:
        job.MergeFromString(rec.renditions)
    if rec.idempotency_key:
        job.idempotency_key = rec.idempotency_key
    for s in rec.stages:
        stage = job.stages.add()
        stage.index = s.idx
        stage.service = s.service
        stage.state = _STAGE_STATES[s.state]
        stage.attempts = s.attempts
        stage.operations.extend(job_pb2.Job.FromString(s.operations).operations)
        if s.error_code:
            _error(stage.error, s.error_code, s.error_reason, s.error_message)
        if s.reports:
            stage.MergeFromString(s.reports)
        if s.renditions:
            stage.MergeFromString(s.renditions)
        if s.started_at is not None:
            stage.started_at.FromDatetime(s.started_at)
        if s.finished_at is not None:
            stage.finished_at.FromDatetime(s.finished_at)
    job.progress = sm.progress(rec.stages)
    job.outputs.extend(out for out, _ in outputs(rec))
    if rec.metadata:
        job.metadata.MergeFromString(rec.metadata)
    if rec.error_code:
        _error(job.error, rec.error_code, rec.error_reason, rec.error_message)
    job.created_at.FromDatetime(rec.created_at)
    job.updated_at.FromDatetime(rec.updated_at)
    if rec.finished_at is not None:
        job.finished_at.FromDatetime(rec.finished_at)
    if rec.webhook is not None:
        hook = job.webhook
        hook.url = rec.webhook.url
        hook.state = job_pb2.WebhookStatus.State.Value(rec.webhook.state)
        hook.attempts = rec.webhook.attempts
        hook.last_error = rec.webhook.last_error or ""
        if rec.webhook.delivered_at is not None:
            hook.delivered_at.FromDatetime(rec.webhook.delivered_at)
    return job


def _error(target: job_pb2.JobError, code: str, reason: str | None, message: str | None) -> None:
    target.code = code
    target.reason = reason or ""
    target.message = message or ""


def stage_results(
    output_key: str | None, output: bytes | None, rendition_outputs: bytes | None
) -> list[events_pb2.RenditionOutput]:
    """What a stage made, in one shape: its renditions' images, or its one unnamed image (none
    for a stage that made no image)."""
    if rendition_outputs:
        return list(events_pb2.TaskCompleted.FromString(rendition_outputs).rendition_outputs)
    if not output_key:
        return []
    made = events_pb2.RenditionOutput(key=output_key)
    if output:
        made.output.MergeFromString(output)
    return [made]


def outputs(job: sm.JobRecord) -> list[tuple[job_pb2.Output, str]]:
    """A succeeded job's outputs and their object keys: what its output stage made, one per
    rendition (named) or the one image of a plain job (unnamed). None before it succeeded. No
    `download_path`: REST routes are the gateway's (services/runtime/routes.py)."""
    stage = sm.final_output_stage(job.stages) if job.state == sm.SUCCEEDED else None
    if stage is None:
        return []
    names = (
        [r.name for r in job_pb2.Stage.FromString(stage.renditions).renditions]
        if stage.renditions
        else [""]
    )
    made = stage_results(stage.output_key, stage.output, stage.rendition_outputs)
    found = []
    for i, (name, result) in enumerate(zip(names, made, strict=False)):
        out = job_pb2.Output()
        out.CopyFrom(result.output)
        out.index = i
        if name:
            out.rendition = name
        found.append((out, result.key))
    return found
