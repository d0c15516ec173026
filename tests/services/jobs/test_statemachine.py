from datetime import UTC, datetime, timedelta

import pytest

from services.jobs import statemachine as sm
from services.runtime.errors import InvalidArgument

V = sm.StageView


def test_next_stage_reads_latest_image_output() -> None:
    stages = [
        V(0, "imaging", sm.SUCCEEDED, "inputs/src", "outputs/a.webp"),
        V(1, "inference", sm.PENDING, None, None),
    ]
    assert sm.next_input_key(stages, 0, "inputs/src") == "outputs/a.webp"


def test_metadata_stage_reads_the_source_not_the_stripped_output() -> None:
    stages = [
        V(0, "imaging", sm.SUCCEEDED, "inputs/src", "outputs/a.webp"),
        V(1, "metadata", sm.PENDING, None, None),
    ]
    assert sm.next_input_key(stages, 0, "inputs/src") == "inputs/src"


def test_stage_after_metadata_reads_the_image_before_it() -> None:
    stages = [
        V(0, "imaging", sm.SUCCEEDED, "inputs/src", "outputs/a.png"),
        V(1, "metadata", sm.SUCCEEDED, "inputs/src", None),
        V(2, "imaging", sm.PENDING, None, None),
    ]
    assert sm.next_input_key(stages, 1, "inputs/src") == "outputs/a.png"
    assert sm.final_output_stage(stages) == stages[0]


def test_metadata_only_job_has_no_output_and_full_progress() -> None:
    stages = [V(0, "metadata", sm.SUCCEEDED, "inputs/src", None)]
    assert sm.final_output_stage(stages) is None
    assert sm.progress(stages) == 1.0
    assert sm.progress([]) == 0.0


def test_page_token_round_trip_and_garbage() -> None:
    when = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    token = sm.encode_page_token(when, "job_abc")
    assert sm.decode_page_token(token) == (when, "job_abc")
    with pytest.raises(InvalidArgument) as exc:
        sm.decode_page_token("!!!not-a-token")
    assert exc.value.reason == "BAD_PAGE_TOKEN"


# ---- transitions on in-memory records ------------------------------------------------------

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)


def job(*services: str, renditions: int = 0) -> sm.JobRecord:
    stages = [sm.StageRecord(i, svc) for i, svc in enumerate(services)]
    stages[0].input_key = "inputs/src"
    stages[-1].rendition_count = renditions
    return sm.JobRecord(
        job_id="job_x",
        tenant_id="t",
        image_id="img",
        state=sm.PENDING,
        operations=b"",
        source=b"",
        deadline=T0 + timedelta(minutes=10),
        created_at=T0,
        updated_at=T0,
        stages=stages,
    )


def test_start_runs_the_stage_and_the_job_once() -> None:
    j = job("imaging")
    sm.start_stage(j, 0, 1, T1)
    assert (j.state, j.updated_at) == (sm.RUNNING, T1)
    assert (j.stages[0].state, j.stages[0].attempts, j.stages[0].started_at) == (
        sm.RUNNING,
        1,
        T1,
    )
    assert j.changed == {0}
    # A redelivery: more attempts, the first start time, the job untouched.
    sm.start_stage(j, 0, 2, T2)
    assert (j.stages[0].attempts, j.stages[0].started_at, j.updated_at) == (2, T1, T1)


def test_start_of_a_finished_stage_changes_no_stage() -> None:
    j = job("imaging", "metadata")
    sm.complete_stage(j, 0, sm.Completion(output_key="outputs/a"), "inputs/src", T1)
    j.changed.clear()
    sm.start_stage(j, 0, 3, T2)
    assert j.stages[0].state == sm.SUCCEEDED and j.stages[0].attempts == 0
    assert not j.changed and j.updated_at == T1


def test_complete_hands_the_next_stage_its_input() -> None:
    j = job("imaging", "metadata", "imaging")
    done = sm.Completion(output_key="outputs/a", output=b"o", reports=b"r")
    assert sm.complete_stage(j, 0, done, "inputs/src", T1) == 1
    first = j.stages[0]
    assert (first.state, first.output_key, first.output, first.reports) == (
        sm.SUCCEEDED,
        "outputs/a",
        b"o",
        b"r",
    )
    assert (first.started_at, first.finished_at) == (T1, T1)
    assert j.stages[1].input_key == "inputs/src"  # metadata reads the source
    assert (j.state, j.updated_at, j.finished_at) == (sm.RUNNING, T1, None)
    assert j.changed == {0, 1}
    assert sm.complete_stage(j, 1, sm.Completion(metadata=b"m"), "inputs/src", T1) == 2
    assert j.stages[2].input_key == "outputs/a" and j.metadata == b"m"
    assert sm.complete_stage(j, 2, sm.Completion(output_key="outputs/b"), "inputs/src", T2) is None
    assert (j.state, j.finished_at) == (sm.SUCCEEDED, T2)
    assert sm.final_output_stage(j.stages) is j.stages[2]
    assert sm.progress(j.stages) == 1.0


def test_a_rendition_stage_completes_with_one_output_per_rendition() -> None:
    j = job("metadata", "imaging", renditions=2)
    sm.complete_stage(j, 0, sm.Completion(), "inputs/src", T1)
    done = sm.Completion(rendition_outputs=b"ro", rendition_output_count=2)
    assert sm.complete_stage(j, 1, done, "inputs/src", T2) is None
    assert j.state == sm.SUCCEEDED and j.stages[1].rendition_outputs == b"ro"
    # One output shape: the renditions' stage is the job's output stage, like a plain image's.
    assert sm.final_output_stage(j.stages) is j.stages[1]
    assert sm.final_output_stage(job("imaging").stages) is None


@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_rendition_stage_with_the_wrong_outputs_fails_the_job(count: int) -> None:
    j = job("imaging", renditions=2)
    done = sm.Completion(output_key="outputs/a", rendition_output_count=count)
    assert sm.complete_stage(j, 0, done, "inputs/src", T1) is None
    assert (j.state, j.error_code, j.error_reason) == (
        sm.FAILED,
        "INTERNAL",
        "BAD_RENDITION_OUTPUTS",
    )
    assert j.stages[0].state == sm.FAILED and j.stages[0].output_key is None


def test_rendition_outputs_from_a_plain_stage_fail_the_job() -> None:
    j = job("imaging")
    done = sm.Completion(rendition_output_count=1)
    sm.complete_stage(j, 0, done, "inputs/src", T1)
    assert j.state == sm.FAILED and j.error_reason == "BAD_RENDITION_OUTPUTS"


def test_fail_ends_the_job_and_cancels_the_open_stages() -> None:
    j = job("imaging", "inference", "metadata")
    sm.complete_stage(j, 0, sm.Completion(output_key="outputs/a"), "inputs/src", T1)
    sm.start_stage(j, 1, 1, T1)
    j.changed.clear()
    sm.fail_stage(j, 1, 4, "INVALID_ARGUMENT", "IMAGE_CORRUPT", "bad", T2)
    assert [s.state for s in j.stages] == [sm.SUCCEEDED, sm.FAILED, sm.CANCELLED]
    assert j.stages[1].attempts == 4 and j.stages[1].error_reason == "IMAGE_CORRUPT"
    assert j.stages[2].finished_at == T2 and j.stages[0].finished_at == T1
    assert (j.state, j.error_reason, j.updated_at, j.finished_at) == (
        sm.FAILED,
        "IMAGE_CORRUPT",
        T2,
        T2,
    )
    assert j.changed == {1, 2}


def test_restart_reopens_the_stages_from_the_first_unfinished_one() -> None:
    j = job("imaging", "metadata", "imaging")
    sm.complete_stage(j, 0, sm.Completion(output_key="outputs/a"), "inputs/src", T1)
    sm.fail_stage(j, 1, 1, "INTERNAL", "BOOM", "boom", T1)
    j.changed.clear()
    deadline = T2 + timedelta(minutes=10)
    assert sm.restart_failed(j, T2, deadline) == 1
    assert [s.state for s in j.stages] == [sm.SUCCEEDED, sm.PENDING, sm.PENDING]
    assert j.stages[1].error_code is None and j.stages[1].finished_at is None
    assert (j.state, j.error_code, j.finished_at, j.updated_at, j.deadline) == (
        sm.RUNNING,
        None,
        None,
        T2,
        deadline,
    )
    assert j.changed == {1, 2}


def test_a_completion_without_a_start_records_its_attempt_and_start() -> None:
    j = job("imaging", "metadata")
    sm.complete_stage(j, 0, sm.Completion(output_key="outputs/a", attempt=2), "inputs/src", T1)
    stage = j.stages[0]
    assert (stage.state, stage.attempts, stage.started_at, stage.finished_at) == (
        sm.SUCCEEDED,
        2,
        T1,
        T1,
    )
    # A late TaskStarted of an earlier delivery changes nothing.
    sm.start_stage(j, 0, 1, T2)
    assert (stage.state, stage.attempts) == (sm.SUCCEEDED, 2)
